#!/usr/bin/env bash
# Build the DeepMapper-NF images from this repository, under the tags the modules use.
#
#   containers/build.sh                 CPU image   ghcr.io/deepmapper-nf/deepmapper:<version>
#   containers/build.sh --cuda          CUDA image  ghcr.io/deepmapper-nf/deepmapper:<version>-cuda (-profile gpu)
#   containers/build.sh --all           both
#   containers/build.sh --sif [--cuda]  Singularity/Apptainer image(s), no Docker needed
#                                       (apptainer build --fakeroot containers/deepmapper.def)
#   options: --engine docker|podman (default docker), --push (push the Docker images)
#
# <version> is the package version (pyproject.toml) = the pipeline's manifest.version = the
# tag in every module's `container`. Docker and Podman keep the image locally, where
# `-profile test,docker` finds it without pulling. SIF images are written to
# $NXF_SINGULARITY_CACHEDIR (or $NXF_APPTAINER_CACHEDIR, default containers/sif) under the
# name Nextflow looks for there (ghcr.io-deepmapper-nf-deepmapper-<version>.img), so
# `-profile test,singularity` (or apptainer) uses them without pulling; export that
# variable before running Nextflow.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
version="$(sed -n 's/^version = "\([^"]*\)"/\1/p' pyproject.toml | head -n 1)"
image="ghcr.io/deepmapper-nf/deepmapper"

engine=docker
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
        --push) push=1 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

build_oci() {  # $1 Dockerfile, $2 tag
    echo "building $2 from $1 with $engine"
    "$engine" build -f "$1" -t "$2" .
    "$engine" run --rm "$2" deepmapper --version
    if [ "$push" = 1 ]; then
        "$engine" push "$2"
    fi
}

build_sif() {  # $1 tag suffix ('' or -cuda), $2 torch wheel index
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
    "$tool" build --fakeroot --build-arg "TORCH_INDEX=$2" --build-arg "VERSION=$version$1" \
        "$target" containers/deepmapper.def
    "$tool" exec "$target" deepmapper --version
    echo "export NXF_SINGULARITY_CACHEDIR=$cache  # (or NXF_APPTAINER_CACHEDIR) before nextflow run"
}

if [ "$sif" = 1 ]; then
    if [ "$cpu" = 1 ]; then build_sif "" "https://download.pytorch.org/whl/cpu"; fi
    if [ "$cuda" = 1 ]; then build_sif "-cuda" "https://download.pytorch.org/whl/cu126"; fi
else
    if [ "$cpu" = 1 ]; then build_oci containers/Dockerfile "$image:$version"; fi
    if [ "$cuda" = 1 ]; then build_oci containers/Dockerfile.cuda "$image:$version-cuda"; fi
fi
