// symphony-host plugin: counter-go
//
// The module is wit_component because the bindings `symphony-host build`
// generates with wit-bindgen are its packages (wit_component/symphony_plugin_*).
module wit_component

go 1.25
