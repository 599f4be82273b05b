// Command dashboard-passwd prints a users-file entry for the dashboard
// with the bcrypt hash of a password read from standard input:
//
//	echo -n 's3cret' | go run ./cmd/dashboard-passwd -name alice -role operator
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/telegate/telegate/gateway/dashboard/auth"
)

func main() {
	name := flag.String("name", "user", "user name (a-z 0-9 . _ -)")
	role := flag.String("role", "viewer", "viewer or operator")
	cost := flag.Int("cost", 12, "bcrypt cost (8..31)")
	flag.Parse()
	if *role != string(auth.RoleViewer) && *role != string(auth.RoleOperator) {
		fmt.Fprintln(os.Stderr, "role must be viewer or operator")
		os.Exit(2)
	}
	fmt.Fprintln(os.Stderr, "password (one line on standard input):")
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil && line == "" {
		fmt.Fprintln(os.Stderr, "no password read:", err)
		os.Exit(1)
	}
	h, err := auth.HashPassword(strings.TrimRight(line, "\r\n"), *cost)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("  - name: %s\n    role: %s\n    password_hash: %q\n", *name, *role, h)
}
