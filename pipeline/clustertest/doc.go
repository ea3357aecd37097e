// Package clustertest holds the tests of flagwatch on a ClickHouse cluster that cross
// services — ingest through replica failures, the story's numbers on a cluster against
// one node — on a throw-away cluster of Debian's ClickHouse 18.16 and ZooKeeper
// (scripts/cluster.sh). It has no code of its own; `make test-cluster` runs it.
package clustertest
