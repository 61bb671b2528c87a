import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["conformance.test.mjs"],
    // The suite's own files live under node_modules; only this file is ours to run.
    watch: false,
  },
})
