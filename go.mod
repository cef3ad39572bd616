module github.com/sever-dev/sever

go 1.26
