/*
    De-novo front end: reads -> hybrid (reference + DENOVO_) transcriptome -> dataset.h5ad.
    index reference, align each sample, pool the unaligned reads, assemble them
    (rnaSPAdes default, Trinity option), keep and tag the new transcripts, build
    the hybrid Salmon index, quantify each sample, build the labelled table.
*/
include { byName          } from '../utils_deepmapper_pipeline'
include { DENOVO_INDEX    } from '../../../modules/local/denovo/index'
include { DENOVO_ALIGN    } from '../../../modules/local/denovo/align'
include { DENOVO_POOL     } from '../../../modules/local/denovo/pool'
include { DENOVO_ASSEMBLE } from '../../../modules/local/denovo/assemble'
include { DENOVO_TAG      } from '../../../modules/local/denovo/tag'
include { DENOVO_HYBRID   } from '../../../modules/local/denovo/hybrid'
include { DENOVO_QUANT    } from '../../../modules/local/denovo/quant'
include { DENOVO_TABLE    } from '../../../modules/local/denovo/table'

workflow DENOVO_ASSEMBLY {
    take:
    ch_reads        // channel: [ val(meta), [ fastq_1, fastq_2? ] ]  meta: id, label, single_end
    ch_reference    // channel: [ val(meta), path(reference cDNA FASTA) ]
    ch_samplesheet  // channel: [ val(meta), path(samplesheet.csv) ]
    assembler       // string: rnaspades or trinity

    main:
    DENOVO_INDEX(ch_reference)
    DENOVO_ALIGN(ch_reads, DENOVO_INDEX.out.index.first())

    // all samples' unaligned mates, sorted by name so the pool (and its hash) is stable
    ch_pool = DENOVO_ALIGN.out.unaligned
        .map { _meta, files -> files }
        .collect(sort: { a, b -> byName(a, b) })
        .map { files ->
            [
                [id: 'pooled', assembler: assembler],
                files.findAll { f -> f.name.endsWith('.unaligned_1.fastq.gz') },
                files.findAll { f -> f.name.endsWith('.unaligned_2.fastq.gz') }
            ]
        }
    DENOVO_POOL(ch_pool)
    DENOVO_ASSEMBLE(DENOVO_POOL.out.reads)

    ch_ref_file = ch_reference.map { _meta, reference -> reference }
    DENOVO_TAG(DENOVO_ASSEMBLE.out.assembly.combine(ch_ref_file))
    DENOVO_HYBRID(ch_reference.combine(DENOVO_TAG.out.fasta.map { _meta, denovo -> denovo }))
    DENOVO_QUANT(ch_reads, DENOVO_HYBRID.out.index.first())

    ch_quants = DENOVO_QUANT.out.quant
        .map { _meta, quant -> quant }
        .collect(sort: { a, b -> byName(a, b) })
        .map { quants -> [quants] }
    ch_table = ch_samplesheet
        .combine(ch_quants)
        .combine(DENOVO_TAG.out.fasta.map { _meta, denovo -> denovo })
    DENOVO_TABLE(ch_table)

    // HISAT2 summaries and Salmon quant directories are MultiQC inputs
    ch_multiqc_files = DENOVO_ALIGN.out.log.map { _meta, hisat2_log -> hisat2_log }
        .mix(DENOVO_QUANT.out.quant.map { _meta, quant -> quant })

    emit:
    dataset       = DENOVO_TABLE.out.dataset     // channel: [ val(meta), path(dataset.h5ad) ]
    table         = DENOVO_TABLE.out.table       // channel: [ val(meta), path(sc_table.tsv) ]
    denovo        = DENOVO_TAG.out.fasta         // channel: [ val(meta), path(denovo.fa) ]
    multiqc_files = ch_multiqc_files             // channel: path
}
