package store_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/event"
	"github.com/flagwatch/flagwatch/pipeline/store"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
)

// The assignment-state views (0030) keep, per (flag, user), the first exposure, its
// variant, whether the user saw several variants, and the first exposure's segment
// properties, whatever order exposures arrive in; flag_activity keeps each flag's first
// and last exposure.
func TestAssignmentStateViews(t *testing.T) {
	_, conn := chtest.DB(t)
	ctx := context.Background()
	w := store.NewWriter(conn)
	exp := func(user string, ts int64, variant, props string) event.Event {
		return event.Event{UUID: uuid.New(), Name: "$feature_flag_called", DistinctID: user, TsMs: ts,
			Properties: props, Source: "posthog", Exposures: []event.Exposure{{Flag: "checkout", Variant: variant}}}
	}
	first := `{"$session_id":"0190c5b2-aaaa-7bbb-8ccc-ddddeeeeffff","$geoip_country_code":"GB","$set":{"plan":"pro"},` +
		`"plan":"free","$current_url":"https://shop.example.com/` + longPath() + `","note":"say \"hi\"","n":3,"$time":"1732500000.1"}`
	// Later exposures arrive first: the state must still pick the earliest.
	_, _, err := w.Write(ctx, []event.Event{
		exp("u1", 2_000, "control", `{"$geoip_country_code":"US","plan":"enterprise"}`),
		exp("u2", 5_000, "test", `{"$geoip_country_code":"DE"}`),
	})
	require.NoError(t, err)
	_, _, err = w.Write(ctx, []event.Event{
		exp("u1", 1_000, "control", first),
		exp("u2", 4_000, "control", `{"$geoip_country_code":"DE"}`), // u2 saw both: $multiple
	})
	require.NoError(t, err)

	type row struct {
		user, variant, segments string
		first                   int64
		multiple                uint8
	}
	rows, err := conn.Query(ctx, `
		SELECT u, v, segments, f, m FROM (
			SELECT if(uh = cityHash64('u1'), 'u1', 'u2') AS u, finalizeAggregation(variant_state) AS v,
				finalizeAggregation(first_state) AS f,
				toUInt8(finalizeAggregation(low_state) != finalizeAggregation(high_state)) AS m,
				finalizeAggregation(segments_state) AS id
			FROM assignment_state FINAL WHERE flag = 'checkout'
		) AS a ANY LEFT JOIN (SELECT id, any(segments) AS segments FROM segment_sets GROUP BY id) AS s USING id
		ORDER BY u`)
	require.NoError(t, err)
	var got []row
	for rows.Next() {
		var r row
		require.NoError(t, rows.Scan(&r.user, &r.variant, &r.segments, &r.first, &r.multiple))
		got = append(got, r)
	}
	require.NoError(t, rows.Err())
	rows.Close()
	require.Equal(t, []row{
		// Nested pairs stay in order (so the first "plan" is $set's, as in the whole
		// object); the session id, the timestamp, the 150-character URL and the number
		// are gone; escaped quotes survive.
		{"u1", "control", `{"$geoip_country_code":"GB","plan":"pro","plan":"free","note":"say \"hi\""}`, 1_000, 0},
		{"u2", "control", `{"$geoip_country_code":"DE"}`, 4_000, 1},
	}, got)

	var flagFirst, flagLast int64
	require.NoError(t, conn.QueryRow(ctx,
		"SELECT minMerge(first_state), maxMerge(last_state) FROM flag_activity WHERE flag = 'checkout'").Scan(&flagFirst, &flagLast))
	require.Equal(t, int64(1_000), flagFirst)
	require.Equal(t, int64(5_000), flagLast)
}

func longPath() string {
	b := make([]byte, 150)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return string(b)
}

// Rows that do not carry segments (stored before 0030, or inserted by something other
// than ingest) get them from the column's SQL default, which must agree with the Go
// scanner ingest uses.
func TestSegmentsDefaultMatchesGo(t *testing.T) {
	_, conn := chtest.DB(t)
	ctx := context.Background()
	props := []string{
		`{}`,
		`{"$geoip_country_code":"GB","plan":"free"}`,
		`{"$lib":"web","$session_id":"0190c5b2-aaaa","$set":{"plan":"pro"},"plan":"free","n":3,"ok":true,"a":["x","y"],"o":{"k":"v"}}`,
		`{"$feature_flag":"f","$feature_flag_response":"test","$browser":"Safari","$time":"1.5","$insert_id":"i"}`,
		`{"$feature/new-checkout":"test","$feature/x":"on","$featured":"y","$browser":"Safari"}`,
		`{"note":"say \"hi\"","url":"` + longPath() + `","k\\":"w"}`,
	}
	b, err := conn.PrepareBatch(ctx, "INSERT INTO exposures (uuid, flag, variant, distinct_id, ts_ms, timestamp, properties, source)")
	require.NoError(t, err)
	for i, p := range props {
		require.NoError(t, b.Append(uuid.New(), "f", "v", "u", int64(i), int64(0), p, "test"))
	}
	require.NoError(t, b.Send())
	rows, err := conn.Query(ctx, "SELECT properties, segments FROM exposures ORDER BY ts_ms")
	require.NoError(t, err)
	defer rows.Close()
	n := 0
	for rows.Next() {
		var p, seg string
		require.NoError(t, rows.Scan(&p, &seg))
		require.Equal(t, event.SegmentProps(p), seg, "segments of %s", p)
		n++
	}
	require.Equal(t, len(props), n)
}
