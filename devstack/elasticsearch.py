"""Elasticsearch 9 (one node) from Maven Central jars, started as Elastic's test framework starts one, on Java 25.

Maven Central carries the server jar, the Netty4 transport module and the test framework (whose
``MockNode`` loads plugins from the class path), but not the distribution's other modules nor its native
libraries. So this is the real Elasticsearch server (indices, mappings, aliases, index templates, search,
cluster health, and the ``X-Elastic-Product`` header the official Python client checks) without:
x-pack (security, ILM, data stream lifecycle...), painless, the ingest-common processors, the
analysis-common tokenizers, filters and language analyzers (``standard``, ``simple``, ``whitespace``,
``keyword`` analyzers and the ``lowercase`` filter/normalizer are in the server and work), and the native
zstd/vector code (so no ``index.codec: best_compression``). ``GET /`` and ``HEAD /`` (the distribution's
rest-root module, used by the client's ``info()`` and ``ping()``) are answered by a small plugin in our
Java main.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from devstack import maven, process
from devstack.base import JAVA25_HOME, Service, StackContext
from devstack.ignite import compile_main

ELASTICSEARCH_VERSION = "9.5.3"
HTTP_PORT = 9200
TRANSPORT_PORT = 9300
MAIN_CLASS = "ElasticsearchNode"
#: Our launcher class: kept in the repo, compiled into the shared cache when missing or changed.
SOURCE = Path(__file__).parent / "java" / f"{MAIN_CLASS}.java"

COORDINATES = (
    f"org.elasticsearch:elasticsearch:{ELASTICSEARCH_VERSION}",
    f"org.elasticsearch.plugin:transport-netty4:{ELASTICSEARCH_VERSION}",
    f"org.elasticsearch.test:framework:{ELASTICSEARCH_VERSION}",
)
#: With these on the class path the server believes it runs inside a randomized test (Randomness,
#: the asserting Lucene codecs) and fails outside one; MockNode does not need them.
EXCLUSIONS = (
    "com.carrotsearch.randomizedtesting:randomizedtesting-runner",
    "org.apache.lucene:lucene-test-framework",
)


class Elasticsearch(Service):
    name = "elasticsearch"
    ports = (HTTP_PORT, TRANSPORT_PORT)
    start_timeout = 120.0

    def _lib(self, ctx: StackContext) -> Path:
        return maven.resolve_classpath(ctx, self.name, COORDINATES, EXCLUSIONS)

    def _classes(self, ctx: StackContext) -> Path:
        return compile_main(ctx, self.name, SOURCE, maven.classpath(self._lib(ctx)), JAVA25_HOME)

    def install(self, ctx: StackContext) -> None:
        self._classes(ctx)

    def prepare(self, ctx: StackContext) -> None:
        home = ctx.service_dir(self.name)
        (home / "home" / "config").mkdir(parents=True, exist_ok=True)
        (home / "tmp").mkdir(exist_ok=True)
        (home / "native").mkdir(exist_ok=True)

    def command(self, ctx: StackContext) -> list[str]:
        home = ctx.service_dir(self.name)
        return [
            str(JAVA25_HOME / "bin" / "java"),
            "-Xms256m",
            "-Xmx512m",
            "-XX:+UseG1GC",
            "-XX:TieredStopAtLevel=1",
            "-XX:MaxDirectMemorySize=256m",
            "-XX:+ExitOnOutOfMemoryError",
            "-Xss1m",
            # What Elastic's own launcher passes (SystemJvmOptions), less what only the packaged node needs.
            "-Dfile.encoding=UTF-8",
            "-Djava.locale.providers=CLDR",
            "-Djava.awt.headless=true",
            "-Djna.nosys=true",
            "-Dio.netty.noUnsafe=true",
            "-Dio.netty.noKeySetOptimization=true",
            "-Dio.netty.recycler.maxCapacityPerThread=0",
            "-Dlog4j.shutdownHookEnabled=false",
            "-Dlog4j2.disable.jmx=true",
            "-Dlog4j2.formatMsgNoLookups=true",
            f"-Djava.io.tmpdir={home / 'tmp'}",
            # Elastic's native libraries (zstd, libvec) ship only in the distribution: pointed at an empty
            # folder the node logs one warning and runs without them (so no index.codec=best_compression).
            f"-Des.nativelibs.path={home / 'native'}",
            "--enable-native-access=ALL-UNNAMED",
            "-cp",
            maven.classpath(self._lib(ctx), self._classes(ctx)),
            MAIN_CLASS,
            str(home / "home"),
            str(ctx.data_dir(self.name)),
            str(HTTP_PORT),
            str(TRANSPORT_PORT),
        ]

    def healthy(self, ctx: StackContext) -> bool:
        if not process.port_in_use(HTTP_PORT):
            return False
        url = f"http://127.0.0.1:{HTTP_PORT}/_cluster/health?wait_for_status=yellow&timeout=2s"
        with urllib.request.urlopen(url, timeout=5) as response:
            health = json.load(response)
        return health.get("status") in ("yellow", "green")

    def exports(self, ctx: StackContext) -> dict[str, str]:
        return {"ELASTICSEARCH_HOST": f"http://127.0.0.1:{HTTP_PORT}"}

    def address(self, ctx: StackContext) -> str:
        return f"http://127.0.0.1:{HTTP_PORT}"
