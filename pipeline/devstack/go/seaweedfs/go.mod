// Wrapper module that builds SeaweedFS's weed command from the published module. Upstream's go.mod
// has a replace directive, which is why 'go install' refuses it: it is repeated here.
module devstack.local/seaweedfs

go 1.26.6

require github.com/seaweedfs/seaweedfs v0.0.0-20261109003541-7506e5f91cd6

// Repeated from upstream's go.mod: tyler-smith/go-bip39 was deleted from GitHub.
replace github.com/tyler-smith/go-bip39 => github.com/cosmos/go-bip39 v1.0.0
