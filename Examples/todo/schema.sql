-- The todo API's one table (Examples/todo). Applied by the tests and `make bench` with
-- `psql -v ON_ERROR_STOP=1 -f Examples/todo/schema.sql`; safe to apply twice.
CREATE TABLE IF NOT EXISTS todos (
    id    bigserial PRIMARY KEY,
    title text      NOT NULL,
    done  boolean   NOT NULL DEFAULT false
);
