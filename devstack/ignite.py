"""Apache Ignite 2.x (one server node, started by our own small Java main) from Maven Central jars, on Java 17."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from pyignite import Client

from devstack import maven, process
from devstack.base import JAVA17_HOME, Service, StackContext
from devstack.errors import DevstackError
from devstack.progress import Phase

IGNITE_VERSION = "2.17.0"
CLIENT_PORT = 10800
DISCOVERY_PORT = 47500
COMMUNICATION_PORT = 47100
#: The cap of the default (in-memory) data region, where cache entries live off-heap.
REGION_MB = 256
MAIN_CLASS = "IgniteNode"
#: Our launcher class: kept in the repo, compiled into the shared cache when missing or changed.
SOURCE = Path(__file__).parent / "java" / f"{MAIN_CLASS}.java"

#: The --add-opens Ignite's own bin/include/jvmdefaults.sh passes on Java 15 and newer.
JVM17_MODULE_FLAGS = (
    "--add-opens=java.base/jdk.internal.access=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/sun.util.calendar=ALL-UNNAMED",
    "--add-opens=java.management/com.sun.jmx.mbeanserver=ALL-UNNAMED",
    "--add-opens=jdk.internal.jvmstat/sun.jvmstat.monitor=ALL-UNNAMED",
    "--add-opens=java.base/sun.reflect.generics.reflectiveObjects=ALL-UNNAMED",
    "--add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.net=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.invoke=ALL-UNNAMED",
    "--add-opens=java.base/java.math=ALL-UNNAMED",
    "--add-opens=java.sql/java.sql=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=java.base/java.time=ALL-UNNAMED",
    "--add-opens=java.base/java.text=ALL-UNNAMED",
    "--add-opens=java.management/sun.management=ALL-UNNAMED",
    "--add-opens=java.desktop/java.awt.font=ALL-UNNAMED",
)

_JUL_PROPERTIES = """\
handlers=java.util.logging.ConsoleHandler
.level=INFO
org.apache.ignite.level=WARNING
java.util.logging.ConsoleHandler.level=ALL
java.util.logging.ConsoleHandler.formatter=org.apache.ignite.logger.java.JavaLoggerFormatter
"""


def compile_main(ctx: StackContext, service: str, source: Path, classpath: str, java_home: Path) -> Path:
    """Compile ``source`` into a cached class folder named by its content hash; return the folder.

    A changed source gets a new folder (so an outdated class is never run); an interrupted compile
    leaves only a ``.partial`` folder, which the next run replaces.
    """
    digest = hashlib.sha256(source.read_bytes() + classpath.encode()).hexdigest()[:12]
    target = ctx.cache("classes") / f"{service}-{source.stem}-{digest}"
    if (target / f"{source.stem}.class").exists():
        return target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    ctx.reporter.phase(service, Phase.BUILD, f"compiling {source.name} into {target}")
    result = subprocess.run(
        [str(java_home / "bin" / "javac"), "-nowarn", "-cp", classpath, "-d", str(partial), str(source)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise DevstackError(service, f"javac could not compile {source}", (result.stdout + result.stderr)[-4000:])
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


class Ignite(Service):
    name = "ignite"
    ports = (CLIENT_PORT, DISCOVERY_PORT, COMMUNICATION_PORT)
    start_timeout = 90.0

    def _lib(self, ctx: StackContext) -> Path:
        return maven.resolve_classpath(ctx, self.name, [f"org.apache.ignite:ignite-core:{IGNITE_VERSION}"])

    def _classes(self, ctx: StackContext) -> Path:
        return compile_main(ctx, self.name, SOURCE, maven.classpath(self._lib(ctx)), JAVA17_HOME)

    def install(self, ctx: StackContext) -> None:
        self._classes(ctx)

    def _ready_file(self, ctx: StackContext) -> Path:
        return ctx.service_dir(self.name) / "ready.pid"

    def prepare(self, ctx: StackContext) -> None:
        self._ready_file(ctx).unlink(missing_ok=True)
        # Ignite's JavaLogger reads IGNITE_HOME/config/java.util.logging.properties (and warns without one).
        config = ctx.service_dir(self.name) / "config"
        config.mkdir(exist_ok=True)
        (config / "java.util.logging.properties").write_text(_JUL_PROPERTIES)

    def command(self, ctx: StackContext) -> list[str]:
        home = ctx.service_dir(self.name)
        work = ctx.data_dir(self.name)
        return [
            str(JAVA17_HOME / "bin" / "java"),
            "-Xms128m",
            "-Xmx512m",
            "-XX:+UseG1GC",
            "-XX:TieredStopAtLevel=1",
            "-XX:MaxDirectMemorySize=128m",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            "-Djava.net.preferIPv4Stack=true",
            *JVM17_MODULE_FLAGS,
            f"-DIGNITE_HOME={home}",
            # No phoning home for version checks; no banner; no advice about production JVM settings.
            "-DIGNITE_UPDATE_NOTIFIER=false",
            "-DIGNITE_NO_ASCII=true",
            "-DIGNITE_PERFORMANCE_SUGGESTIONS_DISABLED=true",
            "-DIGNITE_QUIET=true",
            "-cp",
            maven.classpath(self._lib(ctx), self._classes(ctx)),
            MAIN_CLASS,
            str(work),
            str(CLIENT_PORT),
            str(REGION_MB),
            str(self._ready_file(ctx)),
        ]

    def healthy(self, ctx: StackContext) -> bool:
        if not process.port_in_use(CLIENT_PORT):
            return False
        # A node we started is healthy once it says its start (first exchange included) is over; a node
        # started elsewhere (no pid of ours) is judged by the thin client alone.
        pid = self.pid(ctx)
        if pid is not None:
            ready = self._ready_file(ctx)
            if not ready.exists() or ready.read_text().strip() != str(pid):
                return False
        client = Client(timeout=3.0)
        try:
            client.connect("127.0.0.1", CLIENT_PORT)
            client.get_cache_names()
            return True
        finally:
            client.close()

    def exports(self, ctx: StackContext) -> dict[str, str]:
        return {"IGNITE_HOST": "127.0.0.1", "IGNITE_PORT": str(CLIENT_PORT)}

    def address(self, ctx: StackContext) -> str:
        return f"127.0.0.1:{CLIENT_PORT}"
