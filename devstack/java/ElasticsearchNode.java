/*
 * One Elasticsearch node for the local stack (python -m devstack up elasticsearch), started the
 * way Elastic's own test framework starts one (ESSingleNodeTestCase / InternalTestCluster):
 * org.elasticsearch.node.MockNode with its plugins loaded from the class path. Single node, 127.0.0.1,
 * no security (the server jar has none: that lives in the x-pack distribution), data in DATA_DIR.
 *
 * Plugins: Elastic's Netty4 module (HTTP and transport), and RootPlugin below, which answers GET/HEAD /
 * (cluster name and version) as the distribution's rest-root module does; that module is not published
 * to Maven Central, and clients use the endpoint for info() and ping().
 *
 * Usage: java ... ElasticsearchNode HOME_DIR DATA_DIR HTTP_PORT TRANSPORT_PORT
 */

import java.io.Closeable;
import java.io.IOException;
import java.lang.reflect.Constructor;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;
import java.util.function.Supplier;

import org.elasticsearch.Build;
import org.elasticsearch.client.internal.node.NodeClient;
import org.elasticsearch.cluster.ClusterState;
import org.elasticsearch.cluster.node.DiscoveryNodes;
import org.elasticsearch.cluster.service.ClusterService;
import org.elasticsearch.common.bytes.BytesArray;
import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.features.NodeFeature;
import org.elasticsearch.index.IndexVersion;
import org.elasticsearch.node.InternalSettingsPreparer;
import org.elasticsearch.node.MockNode;
import org.elasticsearch.plugins.ActionPlugin;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.rest.BaseRestHandler;
import org.elasticsearch.rest.RestHandler;
import org.elasticsearch.rest.RestRequest;
import org.elasticsearch.rest.RestResponse;
import org.elasticsearch.rest.RestStatus;
import org.elasticsearch.transport.netty4.Netty4Plugin;
import org.elasticsearch.xcontent.XContentBuilder;

public final class ElasticsearchNode {
    private static final String NODE_NAME = "devstack-1";

    private ElasticsearchNode() {
    }

    /** GET / and HEAD /: the node's name, cluster and version, in the shape of the rest-root module. */
    public static final class RootPlugin extends Plugin implements ActionPlugin {
        private volatile ClusterService clusterService;

        @Override
        public Collection<?> createComponents(PluginServices services) {
            clusterService = services.clusterService();
            return List.of();
        }

        @Override
        public Collection<RestHandler> getRestHandlers(
            RestHandlersServices services, Supplier<DiscoveryNodes> nodes, Predicate<NodeFeature> features) {
            return List.of(new RootHandler(this));
        }
    }

    private static final class RootHandler extends BaseRestHandler {
        private final RootPlugin plugin;

        RootHandler(RootPlugin plugin) {
            this.plugin = plugin;
        }

        @Override
        public String getName() {
            return "devstack_root_action";
        }

        @Override
        public List<Route> routes() {
            return List.of(new Route(RestRequest.Method.GET, "/"), new Route(RestRequest.Method.HEAD, "/"));
        }

        @Override
        protected RestChannelConsumer prepareRequest(RestRequest request, NodeClient client) {
            if (request.method() == RestRequest.Method.HEAD) {
                return channel -> channel.sendResponse(
                    new RestResponse(RestStatus.OK, RestResponse.TEXT_CONTENT_TYPE, BytesArray.EMPTY));
            }
            return channel -> {
                ClusterState state = plugin.clusterService.state();
                Build build = Build.current();
                XContentBuilder body = channel.newBuilder();
                body.startObject();
                body.field("name", NODE_NAME);
                body.field("cluster_name", state.getClusterName().value());
                body.field("cluster_uuid", state.metadata().clusterUUID());
                body.startObject("version");
                body.field("number", build.qualifiedVersion());
                body.field("build_flavor", build.flavor());
                body.field("build_type", build.type().displayName());
                body.field("build_hash", build.hash());
                body.field("build_date", build.date());
                body.field("build_snapshot", build.isSnapshot());
                body.field("lucene_version", IndexVersion.current().luceneVersion().toString());
                body.field("minimum_wire_compatibility_version", build.minWireCompatVersion());
                body.field("minimum_index_compatibility_version", build.minIndexCompatVersion());
                body.endObject();
                body.field("tagline", "You Know, for Search");
                body.endObject();
                channel.sendResponse(new RestResponse(RestStatus.OK, body));
            };
        }
    }

    /**
     * MockNode's public constructors build the Environment through ESTestCase (only to pick a random
     * transport port range), which needs a running randomized test; its private constructor takes a
     * prepared Environment, which is what we give it.
     */
    private static MockNode newMockNode(Settings settings) throws ReflectiveOperationException {
        Environment environment = InternalSettingsPreparer.prepareEnvironment(settings, Map.of(), null, () -> NODE_NAME);
        Constructor<MockNode> constructor = MockNode.class.getDeclaredConstructor(
            Environment.class, Collection.class, boolean.class, Closeable.class);
        constructor.setAccessible(true);
        Closeable noEntitledPaths = () -> { };
        List<Class<? extends Plugin>> plugins = List.of(Netty4Plugin.class, RootPlugin.class);
        return constructor.newInstance(environment, plugins, true, noEntitledPaths);
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 4) {
            System.err.println("usage: ElasticsearchNode HOME_DIR DATA_DIR HTTP_PORT TRANSPORT_PORT");
            System.exit(2);
        }
        Settings settings = Settings.builder()
            .put("path.home", args[0])
            .put("path.data", args[1])
            .put("cluster.name", "devstack")
            .put("node.name", NODE_NAME)
            .put("discovery.type", "single-node")
            .put("network.host", "127.0.0.1")
            .put("http.port", args[2])
            .put("transport.port", args[3])
            .put("http.type", "netty4")
            .put("transport.type", "netty4")
            // A developer's disk is often fuller than a server's: never block writes for that here.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            // Warnings and errors, plus the node's own start/stop lines, go to stdout (the service log).
            .put("logger.level", "WARN")
            .put("logger.org.elasticsearch.node.Node", "INFO")
            .build();

        LogConfigurator.configureESLogging();
        LogConfigurator.configureWithoutConfig(settings);

        MockNode node = newMockNode(settings);
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(20, TimeUnit.SECONDS);
            } catch (IOException | InterruptedException e) {
                e.printStackTrace();
            } finally {
                stopped.countDown();
            }
        }, "devstack-es-shutdown"));
        node.start();
        System.out.println("ElasticsearchNode ready: HTTP on 127.0.0.1:" + args[2]);
        stopped.await();
    }
}
