"""Layer above the runtimes: a running `testbed up` as other tools see and drive it."""
