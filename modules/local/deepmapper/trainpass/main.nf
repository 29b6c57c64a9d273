// One task trains passes meta.start .. meta.start + meta.count - 1 (one seeded
// arrangement each). The pass range lives in meta, so the task hash depends only
// on the dataset, the pair screen's table, the range and the options: -resume
// reuses finished passes. `interactions` is DEEPMAPPER_INTERACTIONS' table (the
// pairs every pass places side by side), or [] with --interactions false.
process DEEPMAPPER_TRAINPASS {
    tag "${meta.id}"
    label 'process_medium'
    label 'process_gpu'
    conda "${moduleDir}/environment.yml"
    container 'deepmapper-nf/deepmapper:0.2.0'

    input:
    tuple val(meta), path(dataset), path(interactions)

    output:
    tuple val(meta), path('passes/pass_*.npz'), emit: passes
    // the gate's verdicts (and the device used): what DEEPMAPPER_PLAN plans the next round from
    tuple val(meta), path("verdicts_${meta.start}.json"), emit: verdicts
    tuple val("${task.process}"), val('deepmapper'), eval("deepmapper --version | sed 's/.*version //'"), emit: versions_deepmapper, topic: versions
    tuple val("${task.process}"), val('torch'), eval("python -c 'import torch; print(torch.__version__)'"), emit: versions_torch, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    // under -profile gpu: say loudly when the task sees no GPU (and record it in the verdicts)
    def gpu  = task.ext.use_gpu ? '--expect-gpu' : '--no-expect-gpu'
    // the screen's pairs, read back rather than recomputed in every task ([]: none given)
    def screen = interactions ? "--interactions-tsv ${interactions}" : ''
    """
    deepmapper train-pass \\
        --dataset ${dataset} \\
        --start ${meta.start} \\
        --count ${meta.count} \\
        --outdir passes \\
        --verdicts verdicts_${meta.start}.json \\
        ${gpu} \\
        ${screen} \\
        ${args}
    """

    stub:
    """
    mkdir -p passes
    for i in \$(seq ${meta.start} \$(( ${meta.start} + ${meta.count} - 1 ))); do
        touch passes/pass_\$(printf '%03d' \$i).npz
    done
    echo '{"format": "deepmapper-verdicts", "version": 1, "device": "stub", "gpu_expected": false, "passes": []}' > verdicts_${meta.start}.json
    """
}
