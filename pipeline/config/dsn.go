package config

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2/lib/churl"
)

// The ClickHouse DSN forms flagwatch accepts: a server over the native protocol
// (clickhouse:// or its alias tcp://, several hosts comma-separated) or the embedded
// engine (chdb://, a directory that one process owns).
const dsnForms = "clickhouse://host:9000/database, tcp://host:9000/database or chdb:///path/to/dir"

// ResolveClickHouseDSN checks dsn's scheme and shape and, when password is set, puts
// it into the DSN's user info (user "default" when the DSN names none), replacing any
// password there. Errors show the DSN redacted. The result holds the password: hand it
// to the store, never to a log.
//
// Checking the scheme here, before anything connects, turns a typo (clickhous://) into
// one line at start-up instead of a connection that can never succeed.
func ResolveClickHouseDSN(dsn string, password Secret) (string, error) {
	return ResolveClickHouseDSNCluster(dsn, password, "", nil)
}

// ResolveClickHouseDSNCluster is ResolveClickHouseDSN that also puts a cluster name and
// its ZooKeeper servers into the DSN (parameters cluster= and zookeeper=, which the store
// reads and does not pass to the server).
func ResolveClickHouseDSNCluster(dsn string, password Secret, cluster string, zookeeper []string) (string, error) {
	dsn, err := resolveDSN(dsn, password)
	if err != nil || (cluster == "" && len(zookeeper) == 0) {
		return dsn, err
	}
	if strings.HasPrefix(dsn, "chdb:") {
		return "", errors.New("-clickhouse-cluster: the embedded engine (chdb://) cannot be a cluster; a cluster needs ClickHouse servers")
	}
	if cluster == "" {
		return "", errors.New("-zookeeper is for a cluster: set -clickhouse-cluster too")
	}
	if len(zookeeper) == 0 {
		return "", fmt.Errorf("-clickhouse-cluster %s needs -zookeeper: the servers of the ZooKeeper or ClickHouse Keeper ensemble the cluster uses (leases and claims live there)", cluster)
	}
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	return dsn + sep + "cluster=" + url.QueryEscape(cluster) + "&zookeeper=" + url.QueryEscape(strings.Join(zookeeper, ",")), nil
}

func resolveDSN(dsn string, password Secret) (string, error) {
	scheme, rest, ok := strings.Cut(dsn, "://")
	if !ok {
		return "", dsnError(dsn, "not a URL")
	}
	switch scheme {
	case "chdb":
		dir, _, _ := strings.Cut(rest, "?")
		if dir == "" || dir == "/" {
			return "", dsnError(dsn, "the embedded engine needs a directory (chdb:///absolute/dir or chdb://relative/dir)")
		}
		if password.IsSet() {
			return "", errors.New("-clickhouse-password: the embedded engine (chdb://) takes no password")
		}
		return dsn, nil
	case "clickhouse", "tcp":
	case "http", "https":
		return "", dsnError(dsn, "flagwatch speaks ClickHouse's native protocol (port 9000), not HTTP; want "+dsnForms)
	default:
		return "", dsnError(dsn, fmt.Sprintf("unknown scheme %q; want %s", scheme, dsnForms))
	}
	u, err := churl.Parse(dsn)
	if err != nil {
		return "", dsnError(dsn, "not a URL")
	}
	if u.Host == "" {
		return "", dsnError(dsn, "no host; want "+dsnForms)
	}
	if password.IsSet() {
		user := "default"
		if u.User != nil && u.User.Username() != "" {
			user = u.User.Username()
		}
		u.User = url.UserPassword(user, password.Reveal())
		return u.String(), nil
	}
	return dsn, nil
}

func dsnError(dsn, msg string) error {
	return fmt.Errorf("invalid -clickhouse-dsn %s: %s", redactDSN(dsn), msg)
}

// redactDSN hides the password in a DSN for an error message, like url.Redacted, but
// also for a DSN that does not parse: whatever follows a user name up to the last "@"
// before the path is a password. Without "://" nothing can be told apart, so nothing is
// shown.
func redactDSN(dsn string) string {
	scheme, rest, ok := strings.Cut(dsn, "://")
	if !ok {
		return redacted
	}
	authority, path, hasPath := strings.Cut(rest, "/")
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		if user, _, hasPassword := strings.Cut(authority[:at], ":"); hasPassword {
			authority = user + ":xxxxx" + authority[at:]
		}
	}
	if hasPath {
		authority += "/" + path
	}
	return scheme + "://" + authority
}
