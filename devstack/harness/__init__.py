"""What the integration tests and the benchmarks share: worker processes (``worker``), a Kafka broker and Pulsar
namespace per run with the real backends (``tenant_provisioning``), the scaling engine's inputs and checks
(``scaling``). Development only, like the rest of ``devstack``."""
