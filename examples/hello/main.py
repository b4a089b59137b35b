"""The hello agent: prints a greeting and writes a file to its granted output folder."""
import os
import sys

out_dir = "/data/outputs"
path = os.path.join(out_dir, "hello.txt")
with open(path, "w") as f:
    f.write("hello from the sandbox\n")

print(f"hello from {sys.argv[0]} as uid {os.getuid()} in {os.getcwd()}")
print(f"wrote {path}: {open(path).read().strip()}")
print("extra args:", sys.argv[1:])
