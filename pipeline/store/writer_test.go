package store_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/event"
	"github.com/flagwatch/flagwatch/pipeline/store"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
)

// WriteBatch stores every event, only the exposures chosen, and every flag's first and
// last exposure from Activity (also of flags with no row); an exposure read from a
// $feature/ property does not copy the event's properties. Thousands of flags in one
// batch (a client making keys up) are split over several statements the server accepts.
func TestWriteBatchRowsAndActivity(t *testing.T) {
	_, conn := chtest.DB(t)
	ctx := context.Background()
	w := store.NewWriter(conn)
	props := `{"$feature/a":"x","$feature/b":"y","plan":"pro"}`
	evs := []event.Event{
		{UUID: uuid.New(), Name: "$feature_flag_called", DistinctID: "u1", TsMs: 1_000, Properties: props, Source: "posthog",
			Exposures: []event.Exposure{{Flag: "c", Variant: "z"}, {Flag: "a", Variant: "x"}, {Flag: "b", Variant: "y"}}},
		{UUID: uuid.New(), Name: "$pageview", DistinctID: "u1", TsMs: 2_000, Properties: props, Source: "posthog",
			Exposures: []event.Exposure{{Flag: "a", Variant: "x"}, {Flag: "b", Variant: "y"}}},
	}
	act := []store.FlagActivity{{Flag: "a", FirstMs: 1_000, LastMs: 2_000}, {Flag: "b", FirstMs: 1_000, LastMs: 2_000},
		{Flag: "c", FirstMs: 1_000, LastMs: 1_000}}
	for i := range 5000 {
		act = append(act, store.FlagActivity{Flag: fmt.Sprintf("made-up-%04d-%s", i, uuid.NewString()), FirstMs: 5, LastMs: 6})
	}
	nev, nexp, err := w.WriteBatch(ctx, store.RawBatch{Events: evs, Activity: act,
		Exposures: []store.ExposureRef{{Event: 0, Exposure: 0}, {Event: 0, Exposure: 1}}})
	require.NoError(t, err)
	require.Equal(t, 2, nev)
	require.Equal(t, 2, nexp)

	rows, err := conn.Query(ctx, "SELECT flag, ts_ms, properties, segments FROM exposures ORDER BY flag")
	require.NoError(t, err)
	var got []string
	for rows.Next() {
		var flag, p, seg string
		var ts int64
		require.NoError(t, rows.Scan(&flag, &ts, &p, &seg))
		got = append(got, fmt.Sprint(flag, " ", ts, " ", p, " ", seg))
	}
	require.NoError(t, rows.Err())
	rows.Close()
	require.Equal(t, []string{
		`a 1000  {"plan":"pro"}`,
		`c 1000 ` + props + ` {"plan":"pro"}`, // the exposure event's own flag keeps the properties
	}, got)

	var last int64
	var flags uint64
	require.NoError(t, conn.QueryRow(ctx, "SELECT maxMerge(last_state) FROM flag_activity WHERE flag = 'b'").Scan(&last))
	require.Equal(t, int64(2_000), last, "b has no row, and its activity is there")
	require.NoError(t, conn.QueryRow(ctx, "SELECT uniqExact(flag) FROM flag_activity").Scan(&flags))
	require.Equal(t, uint64(len(act)), flags)
}
