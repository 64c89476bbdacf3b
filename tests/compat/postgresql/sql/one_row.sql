CREATE TABLE test (id serial PRIMARY KEY, num integer, data varchar);
INSERT INTO test VALUES(1, 2, 'c');
