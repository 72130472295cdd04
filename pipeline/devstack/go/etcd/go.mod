// Wrapper module that builds the etcd server from the published go.etcd.io/etcd/server/v3 module
// (the etcd command's own main lives in the unpublished root module, so main.go here calls etcdmain).
module devstack.local/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 v3.7.3
