package store_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/store"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
)

// Migrations are applied at start-up by every service, so they must be safe to run twice
// and from several processes at once.
func TestMigrateTwiceAndConcurrently(t *testing.T) {
	dsn, conn := chtest.DB(t)
	ctx := context.Background()
	require.NoError(t, store.Migrate(ctx, conn))

	migrateConcurrently(t, dsn)
	var tables uint64
	require.NoError(t, conn.QueryRow(ctx,
		"SELECT count() FROM system.tables WHERE database = currentDatabase() AND name IN ('events','exposures','assignment_state','assignment_state_mv','segment_sets','segment_sets_mv','flag_activity','flag_activity_mv')").Scan(&tables))
	require.Equal(t, uint64(8), tables)
	var old uint64
	require.NoError(t, conn.QueryRow(ctx,
		"SELECT count() FROM system.tables WHERE database = currentDatabase() AND name IN ('assignments','assignments_mv')").Scan(&old))
	require.Zero(t, old, "0030 replaces 0002's assignment state")
	var distinct, total uint64
	require.NoError(t, conn.QueryRow(ctx, "SELECT uniqExact(version), count() FROM schema_migrations FINAL").Scan(&distinct, &total))
	require.Equal(t, distinct, total, "each migration recorded once after FINAL")
}
