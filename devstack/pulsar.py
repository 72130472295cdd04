"""Apache Pulsar standalone (broker + one bookie + RocksDB metadata store) from Maven Central jars.

Runs ``org.apache.pulsar.PulsarStandaloneStarter`` the way ``bin/pulsar standalone`` does, on Java 21+
(the Temurin 25 JDK), with the functions worker and stream storage off.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from devstack import maven, process
from devstack.base import JAVA25_HOME, Service, StackContext
from devstack.errors import DevstackError

PULSAR_VERSION = "4.2.4"
BROKER_PORT = 6650
WEB_PORT = 8080
BOOKIE_PORT = 3181
CLUSTER = "standalone"

#: The broker and the bookie read the same file (as with ``conf/standalone.conf``); only what differs
#: from the built-in defaults or what a single-node, low-memory local stack needs.
_STANDALONE_CONF = """\
clusterName={cluster}
bindAddress=127.0.0.1
advertisedAddress=127.0.0.1
brokerServicePort={broker}
webServicePort={web}
metadataStoreSessionTimeoutMillis=30000
# one bookie: one copy of everything
managedLedgerDefaultEnsembleSize=1
managedLedgerDefaultWriteQuorum=1
managedLedgerDefaultAckQuorum=1
managedLedgerCacheSizeMB=32
loadManagerClassName=org.apache.pulsar.broker.loadbalance.NoopLoadManager
loadBalancerEnabled=false
allowAutoTopicCreation=true
allowAutoTopicCreationType=non-partitioned
brokerDeleteInactiveTopicsEnabled=false
systemTopicEnabled=true
topicLevelPoliciesEnabled=true
transactionCoordinatorEnabled=false
webSocketServiceEnabled=false
forceDeleteTenantAllowed=true
forceDeleteNamespaceAllowed=true
statusFilePath=
# small thread pools for a 2-core development machine
numIOThreads=2
numHttpServerThreads=4
numOrderedExecutorThreads=2
numExecutorThreadPoolSize=2
numCacheExecutorThreadPoolSize=2
bookkeeperNumberOfChannelsPerBookie=1
bookkeeperUseV2WireProtocol=true
# bookie: bound to the loopback interface on a fixed port (its id is stored in its cookie)
allowLoopback=true
listeningInterface=lo
allowEphemeralPorts=true
ledgerStorageClass=org.apache.bookkeeper.bookie.storage.ldb.DbLedgerStorage
dbStorage_writeCacheMaxSizeMb=16
dbStorage_readAheadCacheMaxSizeMb=16
dbStorage_rocksDB_blockCacheSize=8388608
dbStorage_rocksDB_writeBufferSizeMB=4
dbStorage_rocksDB_sstSizeInMB=4
journalSyncData=false
journalMaxGroupWaitMSec=1
diskUsageThreshold=0.99
diskUsageWarnThreshold=0.99
gcWaitTime=300000
"""

_LOG4J2_XML = """\
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="warn">
  <Appenders>
    <Console name="Console" target="SYSTEM_OUT">
      <PatternLayout pattern="%d{ISO8601} %-5level [%t] %c{1} - %msg%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Logger name="org.apache.pulsar.PulsarStandalone" level="info"/>
    <Logger name="org.apache.pulsar.PulsarStandaloneStarter" level="info"/>
    <Logger name="org.apache.pulsar.broker.PulsarService" level="info"/>
    <Logger name="org.apache.pulsar.metadata.bookkeeper.BKCluster" level="info"/>
    <Root level="warn"><AppenderRef ref="Console"/></Root>
  </Loggers>
</Configuration>
"""

#: What ``bin/pulsar`` adds for Java 17+ (Netty and BookKeeper reflective access), the Pulsar metadata
#: drivers for BookKeeper, and Java 24+ switches that silence native-access/Unsafe warnings.
_JVM_FLAGS = [
    "-Djava.net.preferIPv4Stack=true",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.util.zip=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-opens=java.base/sun.net=ALL-UNNAMED",
    "--add-opens=java.management/sun.management=ALL-UNNAMED",
    "--enable-native-access=ALL-UNNAMED",
    "--sun-misc-unsafe-memory-access=allow",
    "-Dbookkeeper.metadata.bookie.drivers=org.apache.pulsar.metadata.bookkeeper.PulsarMetadataBookieDriver",
    "-Dbookkeeper.metadata.client.drivers=org.apache.pulsar.metadata.bookkeeper.PulsarMetadataClientDriver",
    "-Dlog4j2.is.webapp=false",
    "-Dlog4j.shutdownHookEnabled=false",
]


def _http_get(url: str, timeout: float) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - fixed http URL
        return int(response.status), response.read()


class Pulsar(Service):
    name = "pulsar"
    ports = (BROKER_PORT, WEB_PORT, BOOKIE_PORT)
    start_timeout = 120.0

    def _lib(self, ctx: StackContext) -> Path:
        # The parent POM as BOM gives every transitive jar the version Pulsar's own distribution ships.
        return maven.resolve_classpath(
            ctx,
            self.name,
            [f"org.apache.pulsar:pulsar-broker:{PULSAR_VERSION}"],
            boms=[f"org.apache.pulsar:pulsar:{PULSAR_VERSION}"],
        )

    def install(self, ctx: StackContext) -> None:
        if not (JAVA25_HOME / "bin" / "java").exists():
            raise DevstackError(self.name, f"Pulsar {PULSAR_VERSION} needs Java 21+; no JDK at {JAVA25_HOME}")
        self._lib(ctx)

    def prepare(self, ctx: StackContext) -> None:
        home = ctx.service_dir(self.name)
        (home / "standalone.conf").write_text(
            _STANDALONE_CONF.format(cluster=CLUSTER, broker=BROKER_PORT, web=WEB_PORT)
        )
        (home / "log4j2.xml").write_text(_LOG4J2_XML)

    def command(self, ctx: StackContext) -> list[str]:
        home = ctx.service_dir(self.name)
        data = ctx.data_dir(self.name)
        return [
            str(JAVA25_HOME / "bin" / "java"),
            "-Xms256m",
            "-Xmx768m",
            "-XX:MaxDirectMemorySize=256m",
            "-XX:+UseG1GC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            *_JVM_FLAGS,
            f"-Dlog4j.configurationFile={home / 'log4j2.xml'}",
            "-cp",
            maven.classpath(self._lib(ctx)),
            "org.apache.pulsar.PulsarStandaloneStarter",
            "--config",
            str(home / "standalone.conf"),
            "--no-functions-worker",
            "--no-stream-storage",
            "--metadata-dir",
            str(data / "metadata"),
            "--bookkeeper-dir",
            str(data / "bookkeeper"),
            "--bookkeeper-port",
            str(BOOKIE_PORT),
        ]

    def process_env(self, ctx: StackContext) -> dict[str, str]:
        env = super().process_env(ctx)
        # Would switch the standalone to an embedded ZooKeeper instead of the RocksDB metadata store.
        env.pop("PULSAR_STANDALONE_USE_ZOOKEEPER", None)
        return env

    def healthy(self, ctx: StackContext) -> bool:
        """The broker's own health check (a round trip through a heartbeat topic) passes and the
        standalone has created ``public/default``, which it does right after the broker is up."""
        if not (process.port_in_use(WEB_PORT) and process.port_in_use(BROKER_PORT)):
            return False
        admin = self.admin_url()
        status, body = _http_get(f"{admin}/admin/v2/brokers/health", timeout=10)
        if status != 200 or body.strip() != b"ok":
            return False
        status, body = _http_get(f"{admin}/admin/v2/namespaces/public", timeout=5)
        return status == 200 and "public/default" in json.loads(body)

    def admin_url(self) -> str:
        return f"http://127.0.0.1:{WEB_PORT}"

    def exports(self, ctx: StackContext) -> dict[str, str]:
        return {"PULSAR_URL": f"pulsar://127.0.0.1:{BROKER_PORT}", "PULSAR_ADMIN_URL": self.admin_url()}

    def address(self, ctx: StackContext) -> str:
        return f"pulsar://127.0.0.1:{BROKER_PORT}, {self.admin_url()}"
