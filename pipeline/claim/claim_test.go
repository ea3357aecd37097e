package claim_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/claim"
	"github.com/flagwatch/flagwatch/pipeline/store"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
)

// race has four contenders claim each of five keys at once: exactly one wins each key,
// every contender is told the same winner, and a lookup agrees.
func race(t *testing.T, stores []claim.Store) {
	t.Helper()
	ctx := context.Background()
	for k := 0; k < 5; k++ {
		key := fmt.Sprintf("slot-%d|%d", k, time.Now().UnixNano())
		var wg sync.WaitGroup
		told := make([]string, 4)
		errs := make([]error, 4)
		for i := range told {
			wg.Add(1)
			go func() {
				defer wg.Done()
				told[i], errs[i] = stores[i%len(stores)].Claim(ctx, key, fmt.Sprintf("replica-%d", i))
			}()
		}
		wg.Wait()
		winners := 0
		for i := range told {
			require.NoError(t, errs[i])
			require.Equal(t, told[0], told[i], "every contender is told the same holder")
			if told[i] == fmt.Sprintf("replica-%d", i) {
				winners++
			}
		}
		require.Equal(t, 1, winners, "key %s", key)
		for _, s := range stores {
			got, err := s.Lookup(ctx, []string{key, key + "-unclaimed"})
			require.NoError(t, err)
			require.Equal(t, map[string]string{key: told[0]}, got)
		}
	}
}

func TestTableClaims(t *testing.T) {
	_, conn := chtest.DB(t)
	s, err := claim.For(conn, nil)
	require.NoError(t, err)
	race(t, []claim.Store{s})
	_, err = s.Claim(context.Background(), "k", "")
	require.Error(t, err)
}

// On a cluster the claims live in ZooKeeper: two services on different nodes race.
func TestZooKeeperClaims(t *testing.T) {
	cl := chtest.SharedCluster(t)
	dsns := cl.Database(t)
	ctx := context.Background()
	var stores []claim.Store
	for _, dsn := range []string{dsns[0], dsns[len(dsns)-1]} {
		conn, err := store.Open(ctx, dsn, store.WithCluster(cl.Name))
		require.NoError(t, err)
		defer conn.Close()
		_, err = claim.For(conn, nil)
		require.Error(t, err, "a cluster needs ZooKeeper")
		zk, err := claim.DialZooKeeper([]string{cl.ZooKeeper}, conn.Server().Database, nil)
		require.NoError(t, err)
		defer zk.Close()
		s, err := claim.For(conn, zk)
		require.NoError(t, err)
		stores = append(stores, s)
	}
	race(t, stores)
}
