module github.com/hordekit/httpretry

go 1.26
