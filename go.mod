module github.com/sever-dev/sever

go 1.26

require (
	bazil.org/fuse v0.0.0-20230120002735-62a210ff1fd5
	go.uber.org/goleak v1.3.0
)

require golang.org/x/sys v0.4.0
