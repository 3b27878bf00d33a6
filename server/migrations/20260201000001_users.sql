-- Users who log in, and the bearer tokens they hold (stored as SHA-256, never as issued).
CREATE TABLE app_user (
    id BIGSERIAL PRIMARY KEY,
    username TEXT NOT NULL UNIQUE CHECK (username ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    role TEXT NOT NULL CHECK (role IN ('cashier', 'manager', 'admin')),
    -- Argon2id in the PHC string format, parameters included.
    password_hash TEXT NOT NULL,
    disabled BOOLEAN NOT NULL DEFAULT false,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE auth_token (
    token_sha256 BYTEA PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX auth_token_expires_at ON auth_token (expires_at);
CREATE INDEX auth_token_user_id ON auth_token (user_id);
