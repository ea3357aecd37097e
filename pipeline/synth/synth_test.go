package synth

import (
	"hash/fnv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/event"
)

// Every generated record decodes, the stream is reproducible from its seed, and a
// planted effect shows up in the raw counts.
func TestStreamDecodesAndCarriesPlantedEffect(t *testing.T) {
	cfg := Config{Seed: 7, Users: 4000, Start: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), Days: 14,
		Flags: []Flag{{Key: "errors-up", Effects: []Effect{{Event: "$exception", Variant: "test", Multiplier: 3}}}}}
	exc := map[string]int{}
	users := map[string]string{}
	var n int
	var first []byte
	digest := fnv.New64a() // of the whole stream, to compare with a second run
	require.NoError(t, cfg.Each(func(r Record) error {
		digest.Write(r.Value)
		evs, err := event.Decode(r.Value, r.Time)
		require.NoError(t, err, "%s", r.Value)
		if first == nil {
			first = r.Value
		}
		for _, e := range evs {
			for _, x := range e.Exposures {
				if _, ok := users[e.DistinctID]; !ok {
					users[e.DistinctID] = x.Variant
				}
			}
			if e.Name == "$exception" {
				exc[users[e.DistinctID]]++
			}
		}
		n++
		return nil
	}))
	require.Greater(t, n, 10000)
	require.Greater(t, float64(exc["test"]), 2.2*float64(exc["control"]), "planted 3x exceptions")
	again, m := fnv.New64a(), 0
	require.NoError(t, cfg.Each(func(r Record) error {
		again.Write(r.Value)
		m++
		return nil
	}))
	require.Equal(t, n, m, "same records from the same seed")
	require.Equal(t, digest.Sum64(), again.Sum64(), "same records from the same seed")
	require.InDelta(t, 400, len(first), 150, "events are ~350 bytes with nested properties")
}
