// Command has_access is a product backend asking Tollgate whether a user may
// use the product: a deadline on every attempt, one retry for UNAVAILABLE or
// DEADLINE_EXCEEDED only, fail open or closed as you choose when no answer
// comes, and the answer's detail logged. The same policy as
// examples/python/has_access.py.
//
//	go mod init example.com/tollgate-example && ./generate.sh && go mod tidy
//	go run . --user-id alice [--feature export] [--addr 127.0.0.1:50051] [--deadline 0.3] [--on-error open|closed]
//
// Prints `allow` or `deny` and exits 0 or 1 accordingly.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "example.com/tollgate-example/tollgatepb"
)

// mayUse reports whether the user may use the product now. When Tollgate
// gives no answer (after one retry) it returns failOpen. A request Tollgate
// refuses (INVALID_ARGUMENT: a bug in the caller) is an error.
func mayUse(client pb.EntitlementsClient, req *pb.HasAccessRequest, deadline time.Duration, failOpen bool) (bool, error) {
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		answer, err := client.HasAccess(ctx, req)
		cancel()
		if err == nil {
			verdict := "denied"
			if answer.GetHasAccess() {
				verdict = "allowed"
			}
			log.Printf("INFO tollgate: user %s %s: %s, %s", req.GetUserId(), verdict, answer.GetReason(), answer.GetDetail())
			return answer.GetHasAccess(), nil
		}
		s := status.Convert(err)
		switch {
		case s.Code() == codes.InvalidArgument:
			return false, fmt.Errorf("tollgate refused the request: %s", s.Message())
		case attempt == 1 && (s.Code() == codes.Unavailable || s.Code() == codes.DeadlineExceeded):
			log.Printf("WARNING tollgate %s (%s); retrying once", s.Code(), s.Message())
			continue
		}
		policy := "closed (deny)"
		if failOpen {
			policy = "open (allow)"
		}
		log.Printf("ERROR tollgate gave no answer for user %s: %s (%s); failing %s", req.GetUserId(), s.Code(), s.Message(), policy)
		return failOpen, nil
	}
}

func main() { os.Exit(run()) }

func run() int {
	addr := flag.String("addr", "127.0.0.1:50051", "Tollgate's gRPC `HOST:PORT`")
	userID := flag.String("user-id", "", "the product's user id (required)")
	product := flag.String("product", "", "a Stripe product id or price lookup_key")
	feature := flag.String("feature", "", "a Stripe Entitlements feature lookup_key (e.g. export)")
	deadline := flag.Float64("deadline", 0.3, "`seconds` each attempt may take")
	onError := flag.String("on-error", "closed", "when no answer comes: allow (open) or deny (closed)")
	flag.Parse()
	if *userID == "" || (*onError != "open" && *onError != "closed") {
		flag.Usage()
		return 2
	}
	log.SetFlags(0)

	// WithInsecure: plaintext, as Tollgate serves gRPC on localhost. (grpc-go
	// 1.34+ also spells it WithTransportCredentials(insecure.NewCredentials());
	// this form builds with Debian's grpc-go 1.33 too.)
	conn, err := grpc.Dial(*addr, grpc.WithInsecure())
	if err != nil {
		log.Printf("ERROR %v", err)
		return 1
	}
	defer conn.Close()

	allowed, err := mayUse(
		pb.NewEntitlementsClient(conn),
		&pb.HasAccessRequest{UserId: *userID, Product: *product, Feature: *feature},
		time.Duration(*deadline*float64(time.Second)),
		*onError == "open",
	)
	if err != nil {
		log.Printf("ERROR %v", err)
		return 1
	}
	if !allowed {
		fmt.Println("deny")
		return 1
	}
	fmt.Println("allow")
	return 0
}
