// The official Durable Streams server conformance suite against the server at
// DURABLE_STREAMS_URL (tests/e2e/test_durable_conformance.py starts it and runs this).
import { runConformanceTests } from "@durable-streams/server-conformance-tests"

const baseUrl = process.env.DURABLE_STREAMS_URL
if (!baseUrl) throw new Error("set DURABLE_STREAMS_URL to the server's base URL")

runConformanceTests({ baseUrl })
