/*
 * One Apache Ignite 2.x server node for the local stack (python -m devstack up ignite).
 *
 * Everything is bound to 127.0.0.1: static IP discovery on 47500..47509, communication from 47100,
 * the thin client connector (what pyignite speaks) on the given port. Memory is capped: one in-memory
 * default data region of the given size, persistence off. The legacy REST/binary connector is off.
 *
 * The thin client port answers while the node is still in its first partition map exchange, and a cache
 * created then can make that exchange fail (the node halts). So once Ignition.start has returned (the
 * exchange is done), the node writes its pid to READY_FILE; the launcher counts it healthy only then.
 *
 * Usage: java ... IgniteNode WORK_DIR CLIENT_PORT REGION_MB READY_FILE
 */

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.List;

import org.apache.ignite.Ignite;
import org.apache.ignite.Ignition;
import org.apache.ignite.configuration.ClientConnectorConfiguration;
import org.apache.ignite.configuration.DataRegionConfiguration;
import org.apache.ignite.configuration.DataStorageConfiguration;
import org.apache.ignite.configuration.IgniteConfiguration;
import org.apache.ignite.configuration.SystemDataRegionConfiguration;
import org.apache.ignite.spi.communication.tcp.TcpCommunicationSpi;
import org.apache.ignite.spi.discovery.tcp.TcpDiscoverySpi;
import org.apache.ignite.spi.discovery.tcp.ipfinder.vm.TcpDiscoveryVmIpFinder;

public final class IgniteNode {
    private static final String HOST = "127.0.0.1";
    private static final long MB = 1024L * 1024L;

    private IgniteNode() {
    }

    public static void main(String[] args) throws IOException {
        if (args.length != 4) {
            System.err.println("usage: IgniteNode WORK_DIR CLIENT_PORT REGION_MB READY_FILE");
            System.exit(2);
        }
        String workDir = args[0];
        int clientPort = Integer.parseInt(args[1]);
        long regionMb = Long.parseLong(args[2]);
        Path readyFile = Path.of(args[3]);

        TcpDiscoveryVmIpFinder ipFinder = new TcpDiscoveryVmIpFinder();
        ipFinder.setAddresses(List.of(HOST + ":47500..47509"));
        TcpDiscoverySpi discovery = new TcpDiscoverySpi();
        discovery.setLocalAddress(HOST);
        discovery.setLocalPort(47500);
        discovery.setLocalPortRange(9);
        discovery.setIpFinder(ipFinder);

        TcpCommunicationSpi communication = new TcpCommunicationSpi();
        communication.setLocalAddress(HOST);
        communication.setLocalPort(47100);
        communication.setLocalPortRange(9);

        ClientConnectorConfiguration clients = new ClientConnectorConfiguration();
        clients.setHost(HOST);
        clients.setPort(clientPort);
        clients.setPortRange(0);
        clients.setThreadPoolSize(4);

        DataRegionConfiguration region = new DataRegionConfiguration();
        region.setName("default");
        region.setInitialSize(Math.min(64L, regionMb) * MB);
        region.setMaxSize(regionMb * MB);
        region.setPersistenceEnabled(false);
        region.setMetricsEnabled(false);

        SystemDataRegionConfiguration systemRegion = new SystemDataRegionConfiguration();
        systemRegion.setInitialSize(16L * MB);
        systemRegion.setMaxSize(64L * MB);

        DataStorageConfiguration storage = new DataStorageConfiguration();
        storage.setDefaultDataRegionConfiguration(region);
        storage.setSystemDataRegionConfiguration(systemRegion);

        IgniteConfiguration config = new IgniteConfiguration();
        config.setIgniteInstanceName("devstack");
        config.setWorkDirectory(workDir);
        config.setLocalHost(HOST);
        config.setDiscoverySpi(discovery);
        config.setCommunicationSpi(communication);
        config.setClientConnectorConfiguration(clients);
        config.setConnectorConfiguration(null);
        config.setDataStorageConfiguration(storage);
        config.setPeerClassLoadingEnabled(false);
        config.setMetricsLogFrequency(0);
        // A small node on a small machine: modest pools instead of one thread per core times N.
        config.setPublicThreadPoolSize(4);
        config.setSystemThreadPoolSize(4);
        config.setQueryThreadPoolSize(2);
        config.setServiceThreadPoolSize(2);
        config.setDataStreamerThreadPoolSize(2);
        config.setManagementThreadPoolSize(2);
        config.setAsyncCallbackPoolSize(2);
        config.setRebalanceThreadPoolSize(1);
        config.setStripedPoolSize(4);

        Ignite ignite = Ignition.start(config);
        Path partial = readyFile.resolveSibling(readyFile.getFileName() + ".partial");
        Files.writeString(partial, Long.toString(ProcessHandle.current().pid()), StandardCharsets.UTF_8);
        Files.move(partial, readyFile, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        System.out.println("IgniteNode ready: thin client on " + HOST + ":" + clientPort
            + ", node " + ignite.cluster().localNode().id());
        // Ignite's own shutdown hook stops the node on SIGTERM; its non-daemon threads keep the JVM up.
    }
}
