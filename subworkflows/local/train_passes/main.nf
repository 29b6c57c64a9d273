/*
    Scatter/gather of the passes: passes 0..N-1 are cut into tasks of
    `per_task` consecutive passes (one GPU task can train several arrangements),
    each task's range is in its meta map, and every pass file is gathered again
    with collect(). A task's inputs are only the dataset and its (start, count),
    so -resume reuses every finished range.
*/
include { DEEPMAPPER_TRAINPASS } from '../../../modules/local/deepmapper/trainpass'

// [[start: 0, count: k], [start: k, count: k], ..., last range shorter if needed]
def passChunks(int total, int perTask) {
    def step = Math.max(perTask, 1)
    return (0..<total).step(step).collect { start -> [start: start, count: Math.min(step, total - start)] }
}

workflow TRAIN_PASSES {
    take:
    ch_dataset   // channel: [ val(meta), path(dataset.h5ad) ]
    n_passes     // integer: passes 0..n_passes-1
    per_task     // integer: passes per task

    main:
    ch_tasks = ch_dataset.flatMap { meta, dataset ->
        passChunks(n_passes as int, per_task as int).collect { chunk ->
            [meta + chunk + [id: "${meta.id}_pass" + String.format('%03d', chunk.start)], dataset]
        }
    }
    DEEPMAPPER_TRAINPASS(ch_tasks)

    // sorted by file name: the same gathered list (and task hash) on every run
    ch_pass_files = DEEPMAPPER_TRAINPASS.out.passes
        .map { _meta, files -> files }
        .collect(sort: { a, b -> a.name <=> b.name })
        .map { files -> [files] }

    emit:
    passes = ch_dataset.map { meta, _dataset -> meta }.combine(ch_pass_files)  // channel: [ val(meta), [ pass_NNN.npz, ... ] ]
}
