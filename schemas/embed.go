// Package schemas embeds the event JSON Schemas and the numbered ClickHouse migrations,
// so every binary carries the exact schema it was built against.
package schemas

import "embed"

// ClickHouse holds clickhouse/NNNN_name.sql, applied in order by store.Migrate.
//
//go:embed clickhouse/*.sql
var ClickHouse embed.FS

// Events holds the JSON Schemas of the accepted event shapes (SPEC §2).
//
//go:embed events/*.json
var Events embed.FS
