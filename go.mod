module github.com/telegate/telegate

go 1.26.8

require github.com/tinylib/msgp v1.6.5

require (
	github.com/google/go-cmp v0.7.0 // indirect
	github.com/philhofer/fwd v1.2.0 // indirect
	golang.org/x/mod v0.33.0 // indirect
	golang.org/x/sync v0.19.0 // indirect
	golang.org/x/tools v0.42.0 // indirect
)

tool github.com/tinylib/msgp
