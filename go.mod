module github.com/graylane/graylane

go 1.22
