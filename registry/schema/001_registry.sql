-- agora-registry: the catalog, written whole by the persister (store.c).
-- One row per registered instance; `definition` is its JSON (service fields,
-- checks with their last status and output, create/modify indexes).
CREATE TABLE registry_services (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    definition TEXT NOT NULL
);
-- The index of each service name's last change, kept after the name's last
-- instance left, so that a blocking query on it never sees the index go back.
CREATE TABLE registry_names (
    name TEXT PRIMARY KEY,
    idx BIGINT NOT NULL
);
-- key 'index': the registry's index (X-Consul-Index), never decreasing.
CREATE TABLE registry_meta (
    key TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
