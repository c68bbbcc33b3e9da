// Package bench measures what an Estuite event store costs to run: for named workloads it counts
// the storage transactions each role makes (the appender, the dispatcher, the projection or
// aggregate reader) by kind, the bytes each table holds afterwards, the events per second and the
// latency percentiles, and turns the counts into dollars with a dated price table (Azure Table
// Storage, and an estimate for the Cosmos DB Table API from its request-unit model).
//
// Run executes workloads against any table.Backend. Every workload writes its own pair of tables
// (the base table prefix plus a short form of the workload's name), so that the bytes measured
// are the workload's own, and every role works through its own estuite.Store on the shared
// backend, so that Store.RequestCounts attributes each transaction to the role that made it.
//
// The command `estuite bench` runs the default workloads and prints the results; docs/cost.md
// publishes a run on Azurite.
package bench
