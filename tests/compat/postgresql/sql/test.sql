CREATE TABLE test_load (id serial PRIMARY KEY, name varchar);
INSERT INTO test_load (name) VALUES ('one');
