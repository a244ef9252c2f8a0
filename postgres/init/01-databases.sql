-- Run once by the postgres image on an empty data volume
-- (/docker-entrypoint-initdb.d): one database per service, owned by the
-- meshwatch role (POSTGRES_USER). Each service creates its own tables in its
-- database at start (migrations under services/migrations/).
CREATE DATABASE meshwatch_order OWNER meshwatch;
CREATE DATABASE meshwatch_inventory OWNER meshwatch;
CREATE DATABASE meshwatch_payment OWNER meshwatch;
