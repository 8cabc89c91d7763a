// The cross-language test plugin, in Go (see tests/plugins/poly).
package export_wit_world

import (
	"errors"
	"fmt"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
	"wit_component/symphony"
	"wit_component/symphony_plugin_generic"
	"wit_component/symphony_plugin_user"
)

func OnExpire(action, id, key string) witTypes.Result[witTypes.Unit, string] {
	return symphony.Run(action, id, key, handle)
}

func handle(e symphony.Expiry) error {
	switch e.Action {
	case "poly_fail":
		return errors.New("poly failed")
	case "poly_spin":
		for {
		}
	case "poly_one":
		if symphony.Tenant() == "" {
			return errors.New("no tenant")
		}
		return nil
	case "poly_write":
		_, err := symphony.Check(symphony_plugin_generic.Set("w:"+e.ID, "1", symphony.NoTTL()))
		return err
	}
	visits, err := symphony.Check(symphony_plugin_user.IncrementField(e.ID, "visits", 1, symphony.NoTTL()))
	if err != nil {
		return err
	}
	if _, err := symphony.Check(symphony_plugin_user.AppendToList(e.ID, "history", symphony.MustJSON(e.Action), symphony.NoTTL())); err != nil {
		return err
	}
	last := fmt.Sprintf(`{"action": %s, "tenant": %s, "visits": %d}`, symphony.MustJSON(e.Action), symphony.MustJSON(symphony.Tenant()), visits)
	if _, err := symphony.Check(symphony_plugin_generic.Set("last:"+e.ID, last, symphony.NoTTL())); err != nil {
		return err
	}
	symphony.Infof("poly handled %s %s", e.Action, e.ID)
	return nil
}
