//go:build wasip1

// Package symphony helps write symphony-host plugins in Go. It builds for
// wasip1 only (GOOS=wasip1 GOARCH=wasm), with the bindings that
// `symphony-host build` generates, so `go test ./...` on the host skips it.
//
// A Go plugin is a package named export_wit_world holding OnExpire; the
// build (`symphony-host build`) generates the bindings from the WIT with
// wit-bindgen, adds this package as wit_component/symphony, compiles for
// wasip1 and makes the module a component. A whole plugin (in the
// symphony-host repository it is sdk/go/example/example.go, which its
// plugin build compiles):
//
//	package export_wit_world
//
//	import (
//		"errors"
//
//		witTypes "go.bytecodealliance.org/pkg/wit/types"
//		"wit_component/symphony"
//		"wit_component/symphony_plugin_user"
//	)
//
//	func OnExpire(action, id, key string) witTypes.Result[witTypes.Unit, string] {
//		return symphony.Run(action, id, key, func(e symphony.Expiry) error {
//			visits, err := symphony.Check(symphony_plugin_user.IncrementField(e.ID, "visits", 1, symphony.NoTTL()))
//			if errors.Is(err, symphony.ErrDenied) {
//				return errors.New("grant this plugin the user capability")
//			} else if err != nil {
//				return err
//			}
//			symphony.Infof("%s visited %d times", e.ID, visits)
//			return nil
//		})
//	}
//
// The repositories are the generated packages wit_component/symphony_plugin_*
// (user, handler_state, table, shared_state, batch, generic, trigger,
// pubsub); they return witTypes.Result values, which Check turns into
// (value, error) (test the error with errors.Is against ErrNotFound,
// ErrInvalidInput, ErrUnavailable and ErrDenied), and take witTypes.Option
// TTLs (NoTTL, TTL). Values cross as JSON text (JSON or MustJSON, FromJSON).
package symphony

import (
	"encoding/json"
	"errors"
	"fmt"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
	"wit_component/symphony_plugin_context"
	"wit_component/symphony_plugin_log"
	"wit_component/symphony_plugin_types"
)

// Expiry is the trigger that fired.
type Expiry struct {
	// Action part of the key, as stored (":" escaped to "_").
	Action string
	// ID part of the key, as stored.
	ID string
	// Key is the full key, {tenant}:EXPTRIGGER:{action}:{id}.
	Key string
}

// Run calls handle for one expiry and turns its error into the WIT result:
// a nil error is ok, any other error is reported with its text.
func Run(action, id, key string, handle func(Expiry) error) witTypes.Result[witTypes.Unit, string] {
	if err := handle(Expiry{Action: action, ID: id, Key: key}); err != nil {
		return witTypes.Err[witTypes.Unit, string](err.Error())
	}
	return witTypes.Ok[witTypes.Unit, string](witTypes.Unit{})
}

// The kinds of a failed host call (the cases of the WIT repo-error). A
// *RepoError matches its kind with errors.Is.
var (
	// ErrNotFound: the record, field or key does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInvalidInput: an argument was rejected.
	ErrInvalidInput = errors.New("invalid input")
	// ErrUnavailable: Redis could not be reached or answered with an error.
	ErrUnavailable = errors.New("backend unavailable")
	// ErrDenied: not allowed (a capability not granted, a quota).
	ErrDenied = errors.New("denied")
)

// RepoError is a failed host call (the WIT repo-error).
type RepoError struct {
	// Kind is one of ErrNotFound, ErrInvalidInput, ErrUnavailable, ErrDenied.
	Kind error
	// Message says why (empty for not-found).
	Message string
}

func (e *RepoError) Error() string {
	if e.Message == "" {
		return "host call failed: " + e.Kind.Error()
	}
	return fmt.Sprintf("host call failed: %s: %s", e.Kind, e.Message)
}

// Unwrap returns the kind, so errors.Is(err, ErrNotFound) works.
func (e *RepoError) Unwrap() error { return e.Kind }

func repoError(e symphony_plugin_types.RepoError) *RepoError {
	switch e.Tag() {
	case symphony_plugin_types.RepoError_NotFound:
		return &RepoError{Kind: ErrNotFound}
	case symphony_plugin_types.RepoError_InvalidInput:
		return &RepoError{Kind: ErrInvalidInput, Message: e.InvalidInput()}
	case symphony_plugin_types.RepoError_Unavailable:
		return &RepoError{Kind: ErrUnavailable, Message: e.Unavailable()}
	default:
		return &RepoError{Kind: ErrDenied, Message: e.Denied()}
	}
}

// Check turns a host call's result into (value, error).
func Check[T any](r witTypes.Result[T, symphony_plugin_types.RepoError]) (T, error) {
	if r.IsErr() {
		var zero T
		return zero, repoError(r.Err())
	}
	return r.Ok(), nil
}

// Maybe turns an optional result into (value, present).
func Maybe[T any](o witTypes.Option[T]) (T, bool) {
	if o.IsSome() {
		return o.Some(), true
	}
	var zero T
	return zero, false
}

// NoTTL is "use the repository's default TTL".
func NoTTL() witTypes.Option[uint32] { return witTypes.None[uint32]() }

// TTL is a TTL in seconds.
func TTL(seconds uint32) witTypes.Option[uint32] { return witTypes.Some[uint32](seconds) }

// JSON encodes v as JSON text for a repository call.
func JSON(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

// MustJSON is JSON for values that always encode (strings, numbers, maps
// of them); it panics otherwise, which traps the job.
func MustJSON(v any) string {
	text, err := JSON(v)
	if err != nil {
		panic(err)
	}
	return text
}

// FromJSON decodes JSON text from a repository into v.
func FromJSON(text string, v any) error { return json.Unmarshal([]byte(text), v) }

// Tenant is the tenant of the trigger that fired.
func Tenant() string { return symphony_plugin_context.Tenant() }

// Trace logs at trace level; every line carries tenant, action, id and plugin.
func Trace(message string) { symphony_plugin_log.Log(symphony_plugin_log.Level_Trace, message) }

// Debug logs at debug level.
func Debug(message string) { symphony_plugin_log.Log(symphony_plugin_log.Level_Debug, message) }

// Info logs at info level.
func Info(message string) { symphony_plugin_log.Log(symphony_plugin_log.Level_Info, message) }

// Warn logs at warn level.
func Warn(message string) { symphony_plugin_log.Log(symphony_plugin_log.Level_Warn, message) }

// Error logs at error level.
func Error(message string) { symphony_plugin_log.Log(symphony_plugin_log.Level_Error, message) }

// Tracef logs a formatted line at trace level.
func Tracef(format string, args ...any) { Trace(fmt.Sprintf(format, args...)) }

// Debugf logs a formatted line at debug level.
func Debugf(format string, args ...any) { Debug(fmt.Sprintf(format, args...)) }

// Infof logs a formatted line at info level.
func Infof(format string, args ...any) { Info(fmt.Sprintf(format, args...)) }

// Warnf logs a formatted line at warn level.
func Warnf(format string, args ...any) { Warn(fmt.Sprintf(format, args...)) }

// Errorf logs a formatted line at error level (it returns nothing: to fail
// the job, return an error from the handler).
func Errorf(format string, args ...any) { Error(fmt.Sprintf(format, args...)) }
