"""Apache Kafka in KRaft mode (one combined broker and controller) from Maven Central jars."""

from __future__ import annotations

import asyncio
import subprocess
import uuid

from aiokafka.admin import AIOKafkaAdminClient

from devstack import maven, process
from devstack.base import JAVA17_HOME, Service, StackContext

KAFKA_VERSION = "4.1.1"
BROKER_PORT = 9092
CONTROLLER_PORT = 9093

_SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{broker}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data}
num.partitions=4
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.retention.hours=24
"""


class Kafka(Service):
    """The stack's broker; tests that need a broker of their own make one on other ports and another name."""

    name = "kafka"
    start_timeout = 90.0

    def __init__(self, broker_port: int = BROKER_PORT, controller_port: int = CONTROLLER_PORT,
                 name: str = "kafka") -> None:
        self.name = name
        self.broker_port = broker_port
        self.controller_port = controller_port
        self.ports = (broker_port, controller_port)

    def _lib(self, ctx: StackContext) -> str:
        lib = maven.resolve_classpath(
            ctx,
            "kafka",
            [f"org.apache.kafka:kafka_2.13:{KAFKA_VERSION}", "org.slf4j:slf4j-reload4j:1.7.36"],
        )
        return maven.classpath(lib)

    def install(self, ctx: StackContext) -> None:
        self._lib(ctx)

    def _java(self, ctx: StackContext, main: str, *args: str) -> list[str]:
        log4j = ctx.service_dir(self.name) / "log4j.properties"
        return [
            str(JAVA17_HOME / "bin" / "java"),
            "-Xms256m",
            "-Xmx768m",
            "-XX:+UseG1GC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{log4j}",
            f"-Dkafka.logs.dir={ctx.service_dir(self.name)}",
            "-cp",
            self._lib(ctx),
            main,
            *args,
        ]

    def prepare(self, ctx: StackContext) -> None:
        home = ctx.service_dir(self.name)
        data = ctx.data_dir(self.name)
        (home / "log4j.properties").write_text(
            "log4j.rootLogger=WARN, stdout\n"
            "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
            "log4j.logger.kafka.server.KafkaServer=INFO\nlog4j.logger.kafka.server.BrokerServer=INFO\n"
        )
        config = home / "server.properties"
        config.write_text(
            _SERVER_PROPERTIES.format(broker=self.broker_port, controller=self.controller_port, data=data)
        )
        if not (data / "meta.properties").exists():
            ctx.reporter.note(self.name, "formatting KRaft storage")
            argv = self._java(
                ctx, "kafka.tools.StorageTool", "format", "-t", str(uuid.uuid4()), "-c", str(config)
            )
            subprocess.run(argv, check=True, capture_output=True, cwd=home)

    def command(self, ctx: StackContext) -> list[str]:
        return self._java(ctx, "kafka.Kafka", str(ctx.service_dir(self.name) / "server.properties"))

    def healthy(self, ctx: StackContext) -> bool:
        if not process.port_in_use(self.broker_port):
            return False

        async def probe() -> bool:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self.address(ctx), request_timeout_ms=3000
            )
            await admin.start()
            try:
                await admin.list_topics()
                return True
            finally:
                await admin.close()

        return asyncio.run(asyncio.wait_for(probe(), timeout=8))

    def exports(self, ctx: StackContext) -> dict[str, str]:
        return {"KAFKA_BOOTSTRAP_SERVERS": self.address(ctx)}

    def address(self, ctx: StackContext) -> str:
        return f"127.0.0.1:{self.broker_port}"
