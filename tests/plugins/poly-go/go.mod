// symphony-host plugin: poly-go

module wit_component

go 1.25
