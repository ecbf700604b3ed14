CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    email TEXT NOT NULL UNIQUE,          -- stored lower-case
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT 'customer',
    avatar_url TEXT,
    bio TEXT,
    online BOOLEAN NOT NULL DEFAULT FALSE,
    last_seen TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,         -- SHA-256 of the token, hex
    user_id TEXT NOT NULL,
    expires_ms BIGINT NOT NULL,
    revoked BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TEXT NOT NULL
);
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    private_jwks TEXT NOT NULL,          -- one key, as exported by the keyset
    created_ms BIGINT NOT NULL
);
CREATE TABLE clients (
    client_id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL
);
