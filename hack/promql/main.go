// Command promql-check validates PromQL with Prometheus's own parser and rule-file checks.
//
// It reads one JSON object on stdin, {"rules": "<a Prometheus rule file: groups: ...>",
// "exprs": {"<where>": "<PromQL>", ...}}, and writes {"<where>": "<error>", ...}: every
// problem of the rule file (unknown fields, bad durations, expressions, templates) under
// "rules", and each expression that does not parse under its own key. Exit 0 either way.
package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

type input struct {
	Rules string            `json:"rules"`
	Exprs map[string]string `json:"exprs"`
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fmt.Fprintln(os.Stderr, "promql-check: reading stdin:", err)
		os.Exit(2)
	}
	p := parser.NewParser(parser.Options{})
	problems := map[string]string{}
	if in.Rules != "" {
		logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
		_, errs := rulefmt.Parse([]byte(in.Rules), false, model.UTF8Validation, p, logger)
		if len(errs) > 0 {
			text := make([]string, len(errs))
			for i, err := range errs {
				text[i] = err.Error()
			}
			problems["rules"] = strings.Join(text, "; ")
		}
	}
	for where, expr := range in.Exprs {
		if _, err := p.ParseExpr(expr); err != nil {
			problems[where] = err.Error()
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(problems); err != nil {
		os.Exit(2)
	}
}
