"""Apache Cassandra 5.0 (one node, CassandraDaemon) from Maven Central jars, on Java 17."""

from __future__ import annotations

from pathlib import Path

from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import WhiteListRoundRobinPolicy

from devstack import maven, process
from devstack.base import JAVA17_HOME, Service, StackContext

CASSANDRA_VERSION = "5.0.9"
NATIVE_PORT = 9042
STORAGE_PORT = 7000
#: Native protocol v5, the newest Cassandra 5.0 speaks (saves the driver's downgrade dance and its warnings).
PROTOCOL_VERSION = 5
CLUSTER_NAME = "devstack"
#: The data center name SimpleSnitch reports (what NetworkTopologyStrategy replication names).
DATACENTER = "datacenter1"

#: The JPMS flags of Cassandra's own conf/jvm17-server.options (Java 17 and newer).
JVM17_MODULE_FLAGS = (
    "-Djdk.attach.allowAttachSelf=true",
    "--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports=java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports=java.sql/java.sql=ALL-UNNAMED",
    "--add-exports=java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports=jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports=jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports=jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
)

#: A single node that starts fast and stays small: no gossip settling, one token, no JMX, small caches.
_CASSANDRA_YAML = """\
cluster_name: {cluster}
num_tokens: 1
initial_token: 0
auto_bootstrap: false
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:{storage}"
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: {storage}
native_transport_port: {native}
start_native_transport: true
data_file_directories:
  - {data}/data
commitlog_directory: {data}/commitlog
saved_caches_directory: {data}/saved_caches
hints_directory: {data}/hints
cdc_raw_directory: {data}/cdc_raw
commitlog_sync: periodic
commitlog_sync_period: 10000ms
commitlog_segment_size: 8MiB
commitlog_total_space: 128MiB
memtable_heap_space: 64MiB
memtable_offheap_space: 64MiB
key_cache_size: 8MiB
file_cache_size: 32MiB
networking_cache_size: 16MiB
counter_cache_size: 0MiB
prepared_statements_cache_size: 8MiB
concurrent_reads: 8
concurrent_writes: 8
concurrent_counter_writes: 8
concurrent_compactors: 1
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
hinted_handoff_enabled: false
dynamic_snitch: false
disk_failure_policy: stop
commit_failure_policy: stop
"""

_LOGBACK = """\
<configuration scan="false">
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <logger name="org.apache.cassandra" level="INFO"/>
  <logger name="com.datastax" level="WARN"/>
  <root level="WARN"><appender-ref ref="STDOUT"/></root>
</configuration>
"""


class Cassandra(Service):
    name = "cassandra"
    ports = (NATIVE_PORT, STORAGE_PORT)
    start_timeout = 150.0

    def _lib(self, ctx: StackContext) -> Path:
        return maven.resolve_classpath(ctx, self.name, [f"org.apache.cassandra:cassandra-all:{CASSANDRA_VERSION}"])

    def install(self, ctx: StackContext) -> None:
        self._lib(ctx)

    def prepare(self, ctx: StackContext) -> None:
        home = ctx.service_dir(self.name)
        data = ctx.data_dir(self.name)
        for sub in ("data", "commitlog", "saved_caches", "hints", "cdc_raw"):
            (data / sub).mkdir(parents=True, exist_ok=True)
        (home / "triggers").mkdir(exist_ok=True)
        (home / "cassandra.yaml").write_text(
            _CASSANDRA_YAML.format(cluster=CLUSTER_NAME, storage=STORAGE_PORT, native=NATIVE_PORT, data=data)
        )
        (home / "logback.xml").write_text(_LOGBACK)

    def process_env(self, ctx: StackContext) -> dict[str, str]:
        # As Cassandra's own cassandra-env.sh: fewer glibc malloc arenas, less resident memory for nothing.
        return {**super().process_env(ctx), "MALLOC_ARENA_MAX": "4"}

    def command(self, ctx: StackContext) -> list[str]:
        home = ctx.service_dir(self.name)
        data = ctx.data_dir(self.name)
        lib = self._lib(ctx)
        jamm = sorted(lib.glob("jamm-*.jar"))
        return [
            str(JAVA17_HOME / "bin" / "java"),
            # Cassandra mlockall()s what is mapped at start (root may): a small initial heap keeps that small.
            "-Xms64m",
            "-Xmx1g",
            "-Xss256k",
            "-XX:+UseG1GC",
            "-XX:+ParallelRefProcEnabled",
            "-XX:MaxTenuringThreshold=1",
            "-XX:MaxGCPauseMillis=300",
            "-XX:TieredStopAtLevel=1",
            "-XX:MaxDirectMemorySize=256m",
            "-XX:ReservedCodeCacheSize=96m",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            "-Djava.net.preferIPv4Stack=true",
            *JVM17_MODULE_FLAGS,
            *(f"-javaagent:{jar}" for jar in jamm[:1]),
            f"-Dcassandra.config=file://{home / 'cassandra.yaml'}",
            f"-Dcassandra.storagedir={data}",
            f"-Dcassandra.logdir={home}",
            f"-Dcassandra.triggers_dir={home / 'triggers'}",
            f"-Dlogback.configurationFile={home / 'logback.xml'}",
            "-Dcassandra-foreground=yes",
            # A lone seed has nobody to gossip with: do not wait for the ring or for schema agreement.
            "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            "-Dcassandra.ring_delay_ms=100",
            "-Dcassandra.skip_schema_check=true",
            "-Dcassandra.superuser_setup_delay_ms=0",
            # Size Cassandra's per-core pools for a small shared machine, whatever its core count.
            "-Dcassandra.available_processors=2",
            "-cp",
            maven.classpath(lib),
            "org.apache.cassandra.service.CassandraDaemon",
        ]

    def healthy(self, ctx: StackContext) -> bool:
        if not process.port_in_use(NATIVE_PORT):
            return False
        profile = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy(["127.0.0.1"]), request_timeout=5)
        cluster = Cluster(
            ["127.0.0.1"],
            port=NATIVE_PORT,
            protocol_version=PROTOCOL_VERSION,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            connect_timeout=3,
            control_connection_timeout=3,
        )
        try:
            session = cluster.connect()
            row = session.execute("SELECT release_version FROM system.local").one()
            return row is not None and bool(row.release_version)
        finally:
            cluster.shutdown()

    def exports(self, ctx: StackContext) -> dict[str, str]:
        return {"CASSANDRA_HOSTS": "127.0.0.1", "CASSANDRA_PORT": str(NATIVE_PORT)}

    def address(self, ctx: StackContext) -> str:
        return f"127.0.0.1:{NATIVE_PORT}"
