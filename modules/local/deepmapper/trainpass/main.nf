// One task trains passes meta.start .. meta.start + meta.count - 1 (one seeded
// arrangement each). The pass range lives in meta, so the task hash depends only
// on the dataset, the range and the options: -resume reuses finished passes.
process DEEPMAPPER_TRAINPASS {
    tag "${meta.id}"
    label 'process_medium'
    label 'process_gpu'
    container 'ghcr.io/deepmapper-nf/deepmapper:0.1.0'

    input:
    tuple val(meta), path(dataset)

    output:
    tuple val(meta), path('passes/pass_*.npz'), emit: passes
    // one line per pass, "pass N: accuracy A accepted|rejected ...": the gate's verdicts,
    // which decide whether TRAIN_PASSES needs a second round
    tuple val(meta), stdout, emit: log
    tuple val("${task.process}"), val('deepmapper'), eval("deepmapper --version | sed 's/.*version //'"), emit: versions_deepmapper, topic: versions
    tuple val("${task.process}"), val('torch'), eval("python -c 'import torch; print(torch.__version__)'"), emit: versions_torch, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    deepmapper train-pass \\
        --dataset ${dataset} \\
        --start ${meta.start} \\
        --count ${meta.count} \\
        --outdir passes \\
        ${args}
    """

    stub:
    """
    mkdir -p passes
    for i in \$(seq ${meta.start} \$(( ${meta.start} + ${meta.count} - 1 ))); do
        touch passes/pass_\$(printf '%03d' \$i).npz
        echo "pass \$i: accuracy 1.000 accepted (stub)"
    done
    """
}
