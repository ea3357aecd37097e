package config

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// docKeys lists every leaf key of the monitors file as docs/configuration.md names it:
// defaults.alpha, flags[].split, metrics[].numerator.event, rollback.webhook.url,
// templates.<name>.segments, rollout.stages[].group.cohort, …
func docKeys(t reflect.Type, prefix string, out *[]string) {
	own := map[reflect.Type]string{
		reflect.TypeFor[Flag]():     "flags[].",
		reflect.TypeFor[Metric]():   "metrics[].",
		reflect.TypeFor[Rollback](): "rollback.",
		reflect.TypeFor[Template](): "templates.<name>.",
		reflect.TypeFor[Rollout]():  "rollout.",
		reflect.TypeFor[Stage]():    "rollout.stages[].",
	}
	for name, i := range fieldsOf(t) {
		ft := t.Field(i).Type
		for ft.Kind() == reflect.Pointer || (ft.Kind() == reflect.Slice && ft != splitType) {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() != reflect.Struct || ft == durationType:
			*out = append(*out, prefix+name)
		case own[ft] != "":
			docKeys(ft, own[ft], out)
		default:
			docKeys(ft, prefix+name+".", out)
		}
	}
}

// Every key the decoder accepts is documented, with its default and meaning, in
// docs/configuration.md.
func TestEveryKeyIsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	require.NoError(t, err)
	var keys []string
	docKeys(reflect.TypeFor[Monitors](), "", &keys)
	require.Greater(t, len(keys), 30)
	for _, k := range keys {
		require.True(t, strings.Contains(string(doc), "`"+k+"`"), "docs/configuration.md does not document %s", k)
	}
}
