//go:build wasip1

// {{name}}: a symphony-host plugin.
//
// OnExpire runs when a trigger key {tenant}:EXPTRIGGER:{action}:{id} routed
// to this plugin expires. It counts the runs of each id in the handler state
// "{{name}}" (hash {tenant}:state:{{name}}:{id}, field "runs"), logs the
// action and id, and returns ok. Return an error to fail the job.
//
// `symphony-host build` compiles this package for wasip1 with the bindings
// it generates from wit/symphony.wit (hence the build constraint: `go test
// ./...` tests the logic natively and skips it).
package export_wit_world

import (
	witTypes "go.bytecodealliance.org/pkg/wit/types"
	"wit_component/logic"
	"wit_component/symphony"
	"wit_component/symphony_plugin_handler_state"
)

func OnExpire(action, id, key string) witTypes.Result[witTypes.Unit, string] {
	return symphony.Run(action, id, key, func(e symphony.Expiry) error {
		// Scoped by the host to the tenant of the trigger that fired.
		runs, err := symphony.Check(symphony_plugin_handler_state.IncrementField("{{name}}", e.ID, "runs", 1, symphony.NoTTL()))
		if err != nil {
			return err
		}
		symphony.Info(logic.Summary(e.Action, e.ID, runs))
		return nil
	})
}
