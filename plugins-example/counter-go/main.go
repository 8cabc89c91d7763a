//go:build wasip1

// Example plugin in Go: counts page views per user.
//
// On `count_view` for a user id it increments the user field `views`,
// records the time of the latest view and the count in the user's shared
// state `recent_views` (fields `last_view` and `views`), and stores the
// count under the generic key `views:{id}` for an hour. It needs the
// capabilities user, shared-state and generic.
package export_wit_world

import (
	"fmt"
	"time"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
	"wit_component/logic"
	"wit_component/symphony"
	"wit_component/symphony_plugin_generic"
	"wit_component/symphony_plugin_shared_state"
	"wit_component/symphony_plugin_user"
)

func OnExpire(action, id, key string) witTypes.Result[witTypes.Unit, string] {
	return symphony.Run(action, id, key, func(e symphony.Expiry) error {
		if e.Action != "count_view" {
			return fmt.Errorf("counter does not handle %s", e.Action)
		}
		views, err := symphony.Check(symphony_plugin_user.IncrementField(e.ID, "views", 1, symphony.NoTTL()))
		if err != nil {
			return err
		}
		update := symphony.MustJSON(logic.Recent(views, time.Now()))
		if _, err := symphony.Check(symphony_plugin_shared_state.Upsert("recent_views", e.ID, update)); err != nil {
			return err
		}
		if _, err := symphony.Check(symphony_plugin_generic.Set(logic.ViewsKey(e.ID), symphony.MustJSON(views), symphony.TTL(3600))); err != nil {
			return err
		}
		symphony.Infof("%s has %d views (tenant %s)", e.ID, views, symphony.Tenant())
		return nil
	})
}
