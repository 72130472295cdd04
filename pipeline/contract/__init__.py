"""The wire contract: every topic name (:mod:`pipeline.contract.topics`), every record that crosses Kafka or
Pulsar (:mod:`pipeline.contract.messages`) and the versioned JSON Schema of every topic that enters or leaves the
service (:mod:`pipeline.contract.schema_files`, files under ``pipeline/contract/schemas/``)."""
