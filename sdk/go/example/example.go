// The Go SDK's package example (sdk/go/symphony.go shows it): counts a
// user's visits. scripts/build-plugins.sh compiles it, so the example in the
// docs always builds. It needs the user capability.
package export_wit_world

import (
	"errors"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
	"wit_component/symphony"
	"wit_component/symphony_plugin_user"
)

func OnExpire(action, id, key string) witTypes.Result[witTypes.Unit, string] {
	return symphony.Run(action, id, key, func(e symphony.Expiry) error {
		visits, err := symphony.Check(symphony_plugin_user.IncrementField(e.ID, "visits", 1, symphony.NoTTL()))
		if errors.Is(err, symphony.ErrDenied) {
			return errors.New("grant this plugin the user capability")
		} else if err != nil {
			return err
		}
		symphony.Infof("%s visited %d times", e.ID, visits)
		return nil
	})
}
