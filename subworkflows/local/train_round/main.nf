/*
    One round of passes: DEEPMAPPER_PLAN reads the verdicts so far and writes plan.json,
    whose `tasks` ({start, count} each) become DEEPMAPPER_TRAINPASS tasks. The plan's
    warnings (stacked groups cut apart, a GPU task without a GPU, too few accepted) are
    logged here. Every task stages the dataset and the pair screen's table (or [] without
    one); the range is added to meta, so a task's hash is the dataset, the table, the range
    and the options.
*/
include { byName               } from '../utils_deepmapper_pipeline'
include { DEEPMAPPER_PLAN      } from '../../../modules/local/deepmapper/plan'
include { DEEPMAPPER_TRAINPASS } from '../../../modules/local/deepmapper/trainpass'

workflow TRAIN_ROUND {
    take:
    ch_inputs    // channel: [ val(meta), path(dataset.h5ad), path(interactions.tsv) or [] ]
    ch_verdicts  // channel: [ verdicts_NNN.json, ... ] of every earlier round (empty list before round 1)
    round        // integer: the round to plan, 1 ..
    per_task     // integer: passes per task

    main:
    ch_plan_in = ch_inputs
        .map { meta, _dataset, _interactions -> meta }
        .combine(ch_verdicts.map { files -> [files] })
        .map { meta, files -> [meta, files, round, per_task] }
    DEEPMAPPER_PLAN(ch_plan_in)

    ch_plan_file = DEEPMAPPER_PLAN.out.plan.map { _meta, plan -> plan }
    ch_plan_file.splitJson(path: 'warnings').subscribe { warning -> log.warn("round ${round}: ${warning}") }

    ch_tasks = ch_inputs
        .combine(ch_plan_file.splitJson(path: 'tasks'))
        .map { meta, dataset, interactions, chunk ->
            [meta + [start: chunk.start, count: chunk.count, id: "${meta.id}_pass" + String.format('%03d', chunk.start)], dataset, interactions]
        }
    DEEPMAPPER_TRAINPASS(ch_tasks)

    // the verdicts of this round and of every earlier one: what the next round is planned from,
    // sorted by name, so the next DEEPMAPPER_PLAN's inputs (and its -resume hash) do not depend
    // on the order in which the pass tasks finished
    ch_all_verdicts = ch_verdicts
        .map { files -> [files] }
        .combine(DEEPMAPPER_TRAINPASS.out.verdicts.map { _meta, verdicts -> verdicts }.collect().ifEmpty([]).map { files -> [files] })
        .map { before, now -> (before + now).sort { a, b -> byName(a, b) } }

    emit:
    passes   = DEEPMAPPER_TRAINPASS.out.passes.map { _meta, files -> files }.flatten()  // channel: pass_NNN.npz
    verdicts = ch_all_verdicts                                                     // channel: [ verdicts_NNN.json, ... ]
    plan     = DEEPMAPPER_PLAN.out.plan                                            // channel: [ val(meta), path(plan_roundN.json) ]
}
