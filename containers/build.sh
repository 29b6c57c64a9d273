#!/usr/bin/env bash
# Build the DeepMapper-NF images from this checkout, under the names the modules use, so a
# checkout runs before (and without) a release.
#
#   containers/build.sh                 CPU image   <registry>/deepmapper-nf/deepmapper:<version>
#   containers/build.sh --cuda          CUDA image  <registry>/deepmapper-nf/deepmapper:<version>-cuda (-profile gpu)
#   containers/build.sh --all           both
#   containers/build.sh --sif [--cuda]  Singularity/Apptainer image(s), no Docker needed
#   options: --engine docker|podman (default docker), --push (push the Docker images),
#            --registry HOST (default ghcr.io; the pipeline's --container_registry)
#
# <version> is pyproject.toml's version, the one place it lives: the tag of every module's
# `container` and the pipeline's manifest.version follow it (python -m deepmapper.nfgen).
# Docker and Podman keep the image locally, where `-profile test,docker` finds it without pulling
# (with --registry, run the pipeline with the same --container_registry). SIF images are written
# to $NXF_SINGULARITY_CACHEDIR (or $NXF_APPTAINER_CACHEDIR, default containers/sif) under the name
# Nextflow looks for there (<registry>-deepmapper-nf-deepmapper-<version>.img), so
# `-profile test,singularity` (or apptainer) uses them without pulling; export that variable
# before running Nextflow.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
version="$(sed -n 's/^version = "\([^"]*\)"/\1/p' pyproject.toml | head -n 1)"

engine=docker
registry=ghcr.io
cpu=1
cuda=0
sif=0
push=0
while [ $# -gt 0 ]; do
    case "$1" in
        --cuda) cuda=1; cpu=0 ;;
        --all) cuda=1; cpu=1 ;;
        --sif) sif=1 ;;
        --engine) engine="$2"; shift ;;
        --registry) registry="${2%/}"; shift ;;
        --push) push=1 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
image="$registry/deepmapper-nf/deepmapper"

build_oci() {  # $1 Dockerfile, $2 tag
    echo "building $2 from $1 with $engine"
    "$engine" build -f "$1" --build-arg "VERSION=$version" -t "$2" .
    "$engine" run --rm "$2" deepmapper --version
    if [ "$push" = 1 ]; then
        "$engine" push "$2"
    fi
}

build_sif() {  # $1 tag suffix ('' or -cuda), $2 environment file, $3 CONDA_OVERRIDE_CUDA
    local tool cache target
    tool="$(command -v apptainer || command -v singularity || true)"
    if [ -z "$tool" ]; then
        echo "build.sh: --sif needs apptainer or singularity on PATH" >&2
        exit 1
    fi
    cache="${NXF_SINGULARITY_CACHEDIR:-${NXF_APPTAINER_CACHEDIR:-$root/containers/sif}}"
    mkdir -p "$cache"
    target="$cache/$(echo "$image:$version$1" | tr '/:' '--').img"
    echo "building $target with $tool"
    "$tool" build --fakeroot --build-arg "ENV_FILE=$2" --build-arg "CUDA_OVERRIDE=$3" \
        --build-arg "VERSION=$version$1" "$target" containers/deepmapper.def
    "$tool" exec "$target" deepmapper --version
    echo "export NXF_SINGULARITY_CACHEDIR=$cache  # (or NXF_APPTAINER_CACHEDIR) before nextflow run"
}

if [ "$sif" = 1 ]; then
    if [ "$cpu" = 1 ]; then build_sif "" environment.yml ""; fi
    if [ "$cuda" = 1 ]; then build_sif "-cuda" environment.cuda.yml "12.6"; fi
else
    if [ "$cpu" = 1 ]; then build_oci containers/Dockerfile "$image:$version"; fi
    if [ "$cuda" = 1 ]; then build_oci containers/Dockerfile.cuda "$image:$version-cuda"; fi
fi
