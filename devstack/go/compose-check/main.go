// Command compose-check loads a Compose file the way `docker compose config` does, with compose-go (the
// Compose Specification's reference library): interpolation, validation against the specification's JSON
// schema, normalisation. It prints the normalised project as JSON, or the error and exit status 1. It lets
// the tests validate compose.yaml on machines whose docker has no compose plugin. Several files are merged in
// order, as `docker compose -f a.yaml -f b.yaml config` merges them (an override file such as
// compose.kubernetes.yaml is only valid on top of the file it extends).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: compose-check COMPOSE_FILE [OVERRIDE_FILE...]")
		os.Exit(2)
	}
	options, err := cli.NewProjectOptions(os.Args[1:], cli.WithOsEnv, cli.WithName("provisioning"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out, err := json.MarshalIndent(project, "", "  ")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Stdout.Write(append(out, '\n'))
}
