// symphony-host plugin: go-example

module wit_component

go 1.25
