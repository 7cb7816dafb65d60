; s4 assembly, s4 ISA v1.0
.machine s4v1
.dram_size 0x1e40
.const_size 4544
.data 0x0 5fdf1a3d271ed6bddb30a9bd9a01fabe404ab83e3f536a3e0f4b85bdc0791e3e275e663d88d8e2bdb034483e6f687ebdafaf86bd4e3b22bed059ba3dae86a2bc
.data 0x40 ab59df3d0ab4f8bd75cbcf3cdbbc36be00552c3ed1091a3de266873d7524a83dcd004fbe3e65203e3b9bd23ecac6a7be7c17b1be41189abeaf542c3e43e3d23c
.data 0x80 33d85c3e2ff4133e1c802c3d1faf683d5b110bbd54dc313ea75d67be1bcbacbdf803473d2b77b83ef08f1cbed8fd5cbef2b8e6bdc781463e3b8440bdf79c873e
.data 0xc0 3dbfbfbe1d1f673ecbf0533e784591beeaa0fb3cb7fc783eeb0b903c26bd4c3e3d30f33ec267603d6fb065bd57e91dbe40b9043e492921bdd56d12bd2775acbc
.data 0x100 e317053ee8625abecba89cbe9f3af9bee07c753e5bce713ce0a29a3eb3c8eaba52fe17be85c2c33d05f77abcc06d80befb4235be0febb43e5b24913d4b8daa3d
.data 0x140 1a8d62bd2b410dbe729c363e846babbc21771bbe95c1dbbcd77739be80af1b3d0d44673ef13a2bbe6d48923e83ba08beba59fb3cbe4a2bbe180e36bdb4551b3c
.data 0x180 050cb2bd92f30fbec3d40abe6f2c28beb5c6a0beba6c57bd7d50a43d6c0a3a3ed286043e9aa1fb3e3188823d14eababdc7a7bf3e637856be1f58463e189d43be
.data 0x1c0 4d0b913d5790c9bed72b383eefa201bd612e46bebfdeab3ea1be1c3e661a163cb4aa18be2e170ebc5b4a06bd2a6f143e2072233eabc108beaf05e1bd18efd9bd
.data 0x200 8b2b8abe204ff2bdc16697bcc8810d3ef534873e9b8c25be13aee13dad0cb6bdcd7fd43e46a81fbcd5abcd3ddcb93fbe7a0726be933a253d074f9dbdffb4903d
.data 0x240 48ee9fbe2094073ead3638be4c60b03ef74f6cbd4ab8603ea7d88ebe47b2af3d54de35be056ec7bde231a13bb8df81bd6b7a583dae1e193e96b0053e65548fbc
.data 0x280 839d8bbea2ca24be0e5d20bd6546d9beaf061a3ec64f44bd7ae14dbd3b3a423ebfc9083e430b353db8124dbe204c7e3d59cb8d3d9b3335be97ab553ed507d03d
.data 0x2c0 86b0c9be4fcdc73c4d8181bea3b7683e8247253ef00362bed03835be5de0a63c43a243bd492e9c3e5fc0173e4a5d67bd5a80ec3dfb1ad0be57d77d3daf70313e
.data 0x300 109912bdae7311bef0c3e73de98fc83e21d4273dca8365bee80c943eff5cc0bedb1cce3d5f5eeebd29963e3eecf82dbee08f873ed5fb753d17d4b0be531ecabe
.data 0x340 047981bdfb86843e4220d03cedf05b3c9f4041bd391f173e958d9a3dcba8653dd7ab49beba45733e56948b3e344285be50aceb3e27f8133e23e3c7bd8c01c3be
.data 0x380 ab85063e4f5be43d87f8f3bd475ab7bef84a663eb7f9f0bd0f3ac1bd71b2113f83e7d93e4653433e5b8ababd7a02053e5d9fe9be0e8bae3c5c9c1bbe5fa583be
.data 0x3c0 4514a2be1719d73d4b4f923c7bd8023dc4842c3e28472dbe370c7dbe5be6b5bee94b89bd14ae1b3ec5d0f4bc954d033e3be171bef026c0bd24dd1cbef3aa7fbe
.data 0x400 fc68be3eb8842e3e4a041cbe5de11cbe336c3bbc94aa93becb83b23db28784beb7ba97bd38e251bebe8bc4bd7d4f88be960ea1be9bdd45be1a440bbecb9271bd
.data 0x440 aa0b623cab5a9c3e6359263ecf2c4fbd07ab143e0f160dbe5553943ed710e13d84d68abef5b31a3ebf22273ea38009bfb93519bee513c2bdcb7ac5bed78e5abe
.data 0x480 483942bedab4cf3db223763dc975063f187da1bd852e6c3e9c2e813c42f15d3d007e6dbe17adc3bea91c1dbe96171c3e4d14a23e0d65f73d8b18cc3d8bc72bbe
.data 0x4c0 981c9d3e139b893ed26dd9bd8af217bccffd4bbef33d963e5371a63d03c19bbc8faaa63d997ab43d8f8ca8bdc7457ebe9e7483be3c02b2bee3edbc3dbf2de33e
.data 0x500 15fcadbef791e23ccb56a83dbfa649be3377273d17a760bea5d7753e8867f3bd15c2a43cf7210c3ed40db0bd0b6cb7be329ad9bded421c3e917f8abc493e3c3d
.data 0x540 2b445dbe0ba8ea3cec20153ea2ddee3b7561c33e79392abdbf4455bef7a5a5be4aee6b3e176441bc1f2e4f3e1176bb3d9c68a63e3fa6813e77a59abdd35d603d
.data 0x580 c0485e3ef0257dbe5f92943e5b37783ea04d493e879a24bd9283773d83cf64be7ce73d3c3597f0bd8fd38d3c5399cabdea7d683df886713e771a86be23853d3e
.data 0x5c0 2cf6cbbe324addbedb92c3bc1e68b03a095fb53d37b1a8be2e6844bc4f4ccf3c7388803e7b21aabccfacd83d402d48be0fa519bdc47db6bd6709103e9c824abe
.data 0x600 87de2abebdeceb3d033db73e5bc19c3d35ad783da9c78dbdd5e85e3e6526dd3d9b7ab13e9e75873dff4942beb372e9bd6f384abe851580be9867813eb557253e
.data 0x640 a3ac7dbe4168b63e1b58483db3f843be4f329e3d5abc62bc5d3d1ebedbf4c6bec7a5f03bf8336f3d7c0c04bf404ae33d8dfbfc3da46dc0bdd2b3b73c48ea65bd
.data 0x680 49702bbe807a93bd7c678a3e0f8b94bed44e423d4bd4163d35ec10beea5cb4bdff668fbe5b7b2ebe04fa433ba6d2853dd2fc37be177c1c3ff79ce9bd139ed03c
.data 0x6c0 26e43cbdf3bfa3bdbe3a853e031fc4bd34a4883e0fd8693ef82656beaf11543e8b3205be501b0c3f3f099ebda3b340beb8b1c3be676884be73d5edbd67654cbe
.data 0x700 95a27bbed4670ebe333429bdc669943edb6aaebec0f3e1bd7f5b43beb1269bbe03a781be977e39bebbd9123ee6d71ebdd35bdcbd9562fa3da201663d74f336bd
.data 0x740 4b679d3d73a529beda7c003ea140bf3d3de1a8bdadbf79be93a79b3ec5569a3c8b391c3f74d105be89a92e3e2edbb1bd0bce4f3db3ad2a3ec0b223befcfca3bc
.data 0x780 e7d7033d02edb93c6d4ef43d0b09523e23ba2a3ebb75573db2488ebdf55b67be4ea116be5b7ed8bde1d10b3e4bef94bd556e7ebea146003e788124be7ad71cbe
.data 0x7c0 8e5c39bd4bd0c13d281cf7be7dac65beb7d70f3d0c2995bd080f31be73c7ddbd9bd98d3e93aababd2bf4113ebf2c223e1869b8bdf5a1b53dd66ab8bdea06fabd
.data 0x800 889a66bee830333e0816a3bd5328e2bd95e666bec939b93efbeb173e3b96d9bc17480ebecaa69cbec30d6f3d70466c3d613890beb2e26d3e77ea1e3e5f0845be
.data 0x840 029de3bdd107afbdd3a0033d3f80eebccfd3a7be95f2963e8d8f813d6b1a813e6b7e803ef74f2abd54118c3d71de163ee99d1d3e424806bd7235fdbd0a41e73b
.data 0x880 ed2724bee7b5e3bdefe3cfbe470a893caf4e52be05ace3bd3fb02cbcff8b803d8273c13e0771273de5b790be0f37d63c6202f4bd9b96a33d67650cbeeb1411be
.data 0x8c0 e569d1bd5c8600be8adbbabeafdc08be6fa537bb30dc753ee32b70bd034498bd7780ed3d75f0dc3d99caa33e65a9ef3d55f07ebb7e0b893e739e9c3e0bb7c2bd
.data 0x900 578c013dfc18acbe892595bd09fe34be405e2fbd0b47c5bd2f0708bdd1cfa8bce21fca3d4f2f3d3d731de6bda30284becbe57c3ebb21913e0324babd8ff4e53d
.data 0x940 ed459cbe87f89fbee3165dbd41b3963e705556be23d42abe229ea43e9ae3c1bea858043effcec73d1efa28bd86851a3db13b063f0ac766be049780bd1a1243bd
.data 0x980 273f0dbea86889be6927a33e484d343db604b4be2fef0fbe580da63dab3da53d507d93be35cb95bcddb6553d24cca03dc4a0a13d3aadbabe8c21bd3eeef52c3d
.data 0x9c0 f0eeb83e3797123f538703bdb3ac7cbe54f9303e8c2314bdc0e5b8bdf79d53be43d4ac3ec851b5bd47518fbe4353b7bdb2016dbee75a013d90c5abbd7b8f58be
.data 0xa00 c27bf63d78c603beef39143eed1f813e804194bdf96704be6b43233da291363ed66f12babd4de53c443bb0bb70f27e3d3ec4003e089a10be57a5c5bd0bd50e3c
.data 0xa40 8a5708be2707df3c509bdb3d3b5b8ebbc536f7bdc92b1fbe5353b33e02eb333e235c65be073e2cbeb7e1bf3ec3c19a3e0b01d23ca2206d3e534498be87918939
.data 0xa80 bdb7173eee75bebe735b20be2454203effc1673ecd04f3bd72696d3db8e9a33e97709cbd578988be6f3849bc9109a1bd333a853eab2a033ddb4424bed7d0f53e
.data 0xac0 12d9ccbd8883c13d037e0a3e11a1203e17a70d3d374df03d70805ebc015391bea11134bd078a22bda49611bd03f9de3cd8e0ffbd6780873e7e6ea03e2a51e1be
.data 0xb00 e279f43a9f8711be8f7005bfdefda73dd875fdbda1e699bd737105be659e5e3eeace7d3e33c0623ddef20d3ed933b8bc0ba3e53cbae917be3561e23be32812be
.data 0xb40 a3ca983dfb6f293e65ce7e3d7882723e96bd093f3db6d7bef35b333b7aeee8bdfe0fbbbdbf138bbec1252c3cb79353bd699701be525750bdb0c9f2bd4beaefbe
.data 0xb80 42a75c3ed59a78bd597c42be45037b3ddaaa07be0a9edebe3ba3353eedb1abbe4aeb32bd2fddc43cbf348a3e73b9733ee4c7073db4571cbefb59aabde5c25e3e
.data 0xbc0 b3eeb63e60bcde3d6d1004bebfd0523ec7b299bd1b0ea7bdf88764bd9bb9f13d5381613d63534b3e2cc0843eb339d23de3d2eebe4abbadbe62ea013d950854bc
.data 0xc00 081add3ec802c6bb3f09fabcec4e413ef8fe593e17d940bdd7d2c13d7f2668be512841be8b887c3e371790bebfe33c3ee0d40a3e58a51d3ea9f23a3e53f5e63d
.data 0xc40 0f49dbbe6ab24dbe184cf6bdf15a3b3e7af966becd5c10be9a9b94bd78cd863e569093be73a48abe4f71003e70a7d9be69fa873da4f9b9bdd67aa1bea724acbd
.data 0xc80 d73c4dbe0373093d8305953d3c78983e239427bb33bfa43c6d77ecbd27e59abb67f5563e7b31c5be57fd063e5f35dbbd9f1f723c6b23853da2332e3ec94c433d
.data 0xcc0 ffff7fff000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
.data 0xd00 adc5a0bd0b577f3da99f1b3bbb8627bd970e283dc7e8323eaaa4e23c88b8fe3c50d783be6018d0bcd142bebe4b75133ef25b40bea7a5843e9443193f55c6a2bd
.data 0xd40 7527883e6b50a53d5a24e4bdf14c2cbedb2be63d6bd48e3eb5e0903d80d19abe6b7455beadc13abd4df98a3e802c683de70b863d42e9773ec79a27bdf70192bc
.data 0xd80 17fc14bd2b10b6bed326bf3d9247a83d47c5473ec57c73bebb1627be1e613f3e7753843d7acd8c3ebfbf30be727f243dbc710abefbbf7d3da3acc6bd3a88db3d
.data 0xdc0 9b765d3e9f4b0a3ecb2ab9be3c98403e3350b73d539c55bea86735be7bc1d93aeaeaea3d6b9bb8bd2b25a6be6aab663d741b0b3dd5f8f93ecff283be4e37013f
.data 0xe00 53a8b23e7751783d46e1a93e5d349e3cd542483e774616bebe93823c03ca4fbe0754a1be588b5ebd03f106beba9fea3d5d21823ef3910abdf31b413c8ff1193d
.data 0xe40 efd2abbe636e5c3d01c6143b7fca17bc575b61beccf1cabe67034dbd707f813d3b4f893e33aa673e4806953e3088973d7ac86c3e9fc328bd03b4003eebd53e3e
.data 0xe80 85b1093f48c3463da74f82be72148d3edc0e22beb9d346bc4d0571bd97e839be43ae883e8a25f43d85affabd8535633c0c74b1bdf0fbfb3d970e9bbd08e91cbe
.data 0xec0 45f403be6defb2bdb30c6d3d852f3cbe5d6c92bcd8b0b53d4556ef3eec5b2f3ecfc418bf3556d1bda194a2bdd73a833d83b4a03e1ffa173e67d1ebbed5797b3d
.data 0xf00 fb0cb13c4928a93def258b3e0a685fbea5e8613e0c5ba9bef388263c83e49b3da5efe93e5fd60fbe7f75adbe2ab90c3e8b6b07bec022a03e900211be3caa33be
.data 0xf40 8ddf7e3e4ff88b3ce7f54c3e3b7492be4e12a93e3237f1bd5cd2273ec7cf4dbe63ca9ebed26352bd63eb0e3de372a13e2d618f3da289123e40f2063e6b3d1f3f
.data 0xf80 468e27be3287803e658af4bc85a1553d25f3dfbda20f6e3e717f80beba6687be87402abda82a6dbe0308103edfcd3c3eb1361abe9487203e339607be46f010bc
.data 0xfc0 5f3fb13a1a26c03ef75fb3b80ec53abee5e93bbe67c2753e2be8aabea09cc0bd3cbc9bbdbbeefabe7f35c0bde23d4d3e1bae3c3d077a38bee05d0d3e9893d33d
.data 0x1000 0b4fcf3ee00718be43389fbd0d9d063ca539e3bcf3848d3c0307b0bcfe4f0ebead4aa4be32c4e5bd59998ebeed7357be938ae0bdc2efcd3d949e2d3e93e655be
.data 0x1040 e09f733dfd30223efc043dbca97ea9beb85ddebe96171f3e91ce373ee7cd523dda045cbe2393923ee20d743eebae61bcd2174abd0cf4cabec7d1143e29d6a7be
.data 0x1080 062c063e8d18103e8f8b5e3c2f199f3e00a78ebdc202e73da3f71d3ef6e0363d7be0b5bd87cb763e55d6a23def6832bd507e1cbdad5eac3caa02e73e9a2e853c
.data 0x10c0 4d5b58bd732c5fbeb3e87ebe8de1c4be29792b3da3e71f3a7de757be0eed9abefe8a90bd25c8e1bd8d9e8bbe5a7d603d2ad8bb3c946d81bcd42c183e3c980bbe
.data 0x1100 2f45883eabd555bebc93c63dcffff73d1fff6dbd637c833de3a386bebd1b9dbeeb6e3ebd8eee1bbef880e53d7f1687b970d2ef3d08776b3d1a2a0d3dba81493c
.data 0x1140 70496b3f9293663f9b48b33f0530243f6cc9743f77de983f97e6893fec3aa33fe0378d3fda9e3d3f92666d3f2456363f0f57983fb40ea43fbd93673f79f88c3f
.data 0x1180 9790b7bd2e3c97bee203c7bd2b27a6beb08bf9bd2d7b0b3d0e360c3e7157803ec3089abd08841d3d31889a3de868d13d094a14bfecc328be378a193e02fe6ebe
.sym input x 0x11c0 f32[1,8,16]
.sym input mask_bias 0x13c0 f32[1,1,1,8]
.sym output y 0x1400 f32[1,8,16]
.debug 0 "0:Linear:qkv" "/attn/qkv/MatMul"
.debug 1 "1:MultiHeadAttention:ctx" "/attn/MatMul"
.debug 2 "2:Linear:attn_out" "/attn/out/MatMul"
.debug 3 "3:SkipLayerNorm:y" "/attn/LayerNorm"
.core 0
    dma.ld       dst=0x0 src=0xc00 rows=1 bytes=192 dpitch=192 spitch=192 dt=f32 tdt=bf16 @0  ; /attn/qkv/MatMul
    sync.signal  unit=dma sem=l1
    dma.ld       dst=0xc0 src=x rows=1 bytes=512 dpitch=64 spitch=512 dt=f32 tdt=bf16 @0  ; /attn/qkv/MatMul
    sync.signal  unit=dma sem=l1
    dma.ld       dst=0x2c0 src=0x0 rows=1 bytes=2048 dpitch=64 spitch=2048 dt=f32 tdt=i8 @0  ; /attn/qkv/MatMul
    sync.signal  unit=dma sem=l0
    sync.wait    unit=vpu sem=l1 value=2
    vpu.cvt      dst=0xc0 src=0xc0 rows=8 cols=16 pd=64 ps=64 scale=1.0 sdt=f32 dt=f32 tdt=i8 @0  ; /attn/qkv/MatMul
    sync.signal  unit=vpu sem=l5
    dma.ld       dst=0xec0 src=mask_bias rows=1 bytes=32 dpitch=64 spitch=32 dt=f32 tdt=bf16 @1  ; /attn/MatMul
    sync.signal  unit=dma sem=l1
    sync.wait    unit=spu sem=l0 value=1
    sync.wait    unit=spu sem=l5 value=1
    spu.mm       dst=0xac0 a=0xc0 b=0x2c0 m=8 n=32 k=16 pd=128 pa=64 pb=64 tb=1 dt=f32 tdt=i8 @0  ; /attn/qkv/MatMul
    sync.signal  unit=spu sem=l3
    sync.wait    unit=vpu sem=l3 value=1
    vpu.epilogue dst=0xac0 src=0xac0 rows=8 cols=32 pd=128 ps=128 hb=1 dt=f32 tdt=bf16 @0  ; /attn/qkv/MatMul
    sync.signal  unit=vpu sem=l4
    sync.wait    unit=dma sem=l4 value=1
    dma.st       dst=0x1600 src=0xac0 rows=8 bytes=128 dpitch=192 spitch=128 dt=f32 tdt=bf16 @0  ; /attn/qkv/MatMul
    dma.ld       dst=0xf00 src=0x1600 rows=8 bytes=32 dpitch=64 spitch=192 dt=f32 tdt=bf16 @1  ; /attn/MatMul
    dma.ld       dst=0x1100 src=0x1640 rows=8 bytes=32 dpitch=64 spitch=192 dt=f32 tdt=bf16 @1  ; /attn/MatMul
    sync.signal  unit=dma sem=l0
    sync.wait    unit=dma sem=g2 value=1
    dma.ld       dst=0x1300 src=0x1680 rows=8 bytes=32 dpitch=64 spitch=192 dt=f32 tdt=bf16 @1  ; /attn/MatMul
    sync.signal  unit=dma sem=l0
    sync.wait    unit=spu sem=l0 value=2
    spu.mm       dst=0x1500 a=0xf00 b=0x1100 m=8 n=8 k=8 pd=64 pa=64 pb=64 tb=1 dt=f32 tdt=i8 @1  ; /attn/MatMul
    sync.signal  unit=spu sem=l3
    sync.wait    unit=vpu sem=l3 value=2
    vpu.cvt      dst=0x1500 src=0x1500 rows=8 cols=8 pd=64 ps=64 scale=0.3535533845424652 sdt=f32 dt=f32 tdt=bf16 @1  ; /attn/MatMul
    sync.wait    unit=vpu sem=l1 value=3
    vpu.add      dst=0x1500 a=0x1500 b=0xec0 rows=8 cols=8 pd=64 pa=64 bcast=row dt=f32 tdt=bf16 @1  ; /attn/MatMul
    vpu.rmax     dst=0x1700 src=0x1500 rows=8 cols=8 ps=64 dt=f32 tdt=bf16 @1  ; /attn/MatMul
    vpu.axpb     dst=0x1700 src=0x1700 rows=1 cols=8 pd=64 ps=64 alpha=0.0 beta=1.0 dt=f32 tdt=bf16 @1  ; /attn/MatMul
    vpu.cvt      dst=0x1740 src=0x1700 rows=1 cols=8 pd=64 ps=64 scale=1.0 sdt=f32 dt=i32 tdt=bf16 @1  ; /attn/MatMul
    vpu.cvt      dst=0x1700 src=0x1740 rows=1 cols=8 pd=64 ps=64 scale=1.0 sdt=i32 dt=f32 tdt=bf16 @1  ; /attn/MatMul
    dma.ld       dst=0x1780 src=0xcc0 rows=1 bytes=4 dpitch=64 spitch=4 dt=f32 tdt=bf16 @1  ; /attn/MatMul
    sync.signal  unit=dma sem=l1
    dma.ld       dst=0x19c0 src=0x1620 rows=8 bytes=32 dpitch=64 spitch=192 dt=f32 tdt=bf16 @1  ; /attn/MatMul
    sync.wait    unit=vpu sem=l1 value=4
    vpu.max      dst=0x1500 a=0x1500 b=0x1780 rows=8 cols=8 pd=64 pa=64 bcast=scalar dt=f32 tdt=bf16 @1  ; /attn/MatMul
    vpu.softmax  dst=0x1500 src=0x1500 rows=8 cols=8 pd=64 ps=64 scale=1.0 dt=f32 tdt=bf16 @1  ; /attn/MatMul
    vpu.mul      dst=0x1500 a=0x1500 b=0x1700 rows=8 cols=8 pd=64 pa=64 bcast=col dt=f32 tdt=bf16 @1  ; /attn/MatMul
    sync.signal  unit=vpu sem=l5
    sync.wait    unit=spu sem=l0 value=3
    sync.wait    unit=spu sem=l5 value=2
    spu.mm       dst=0x17c0 a=0x1500 b=0x1300 m=8 n=8 k=8 pd=64 pa=64 pb=64 dt=f32 tdt=i8 @1  ; /attn/MatMul
    sync.signal  unit=spu sem=l2
    sync.wait    unit=dma sem=l2 value=1
    dma.st       dst=0x1c00 src=0x17c0 rows=8 bytes=32 dpitch=64 spitch=64 dt=f32 tdt=bf16 @1  ; /attn/MatMul
    dma.ld       dst=0x1bc0 src=0x1660 rows=8 bytes=32 dpitch=64 spitch=192 dt=f32 tdt=bf16 @1  ; /attn/MatMul
    sync.signal  unit=dma sem=l0
    dma.ld       dst=0x1dc0 src=0x16a0 rows=8 bytes=32 dpitch=64 spitch=192 dt=f32 tdt=bf16 @1  ; /attn/MatMul
    sync.signal  unit=dma sem=l0
    sync.wait    unit=spu sem=l0 value=4
    spu.mm       dst=0x1fc0 a=0x19c0 b=0x1bc0 m=8 n=8 k=8 pd=64 pa=64 pb=64 tb=1 dt=f32 tdt=i8 @1  ; /attn/MatMul
    sync.signal  unit=spu sem=l3
    sync.wait    unit=vpu sem=l3 value=3
    vpu.cvt      dst=0x1fc0 src=0x1fc0 rows=8 cols=8 pd=64 ps=64 scale=0.3535533845424652 sdt=f32 dt=f32 tdt=bf16 @1  ; /attn/MatMul
    vpu.add      dst=0x1fc0 a=0x1fc0 b=0xec0 rows=8 cols=8 pd=64 pa=64 bcast=row dt=f32 tdt=bf16 @1  ; /attn/MatMul
    vpu.rmax     dst=0x21c0 src=0x1fc0 rows=8 cols=8 ps=64 dt=f32 tdt=bf16 @1  ; /attn/MatMul
    vpu.axpb     dst=0x21c0 src=0x21c0 rows=1 cols=8 pd=64 ps=64 alpha=0.0 beta=1.0 dt=f32 tdt=bf16 @1  ; /attn/MatMul
    vpu.cvt      dst=0x2200 src=0x21c0 rows=1 cols=8 pd=64 ps=64 scale=1.0 sdt=f32 dt=i32 tdt=bf16 @1  ; /attn/MatMul
    vpu.cvt      dst=0x21c0 src=0x2200 rows=1 cols=8 pd=64 ps=64 scale=1.0 sdt=i32 dt=f32 tdt=bf16 @1  ; /attn/MatMul
    dma.ld       dst=0x2240 src=0xcc0 rows=1 bytes=4 dpitch=64 spitch=4 dt=f32 tdt=bf16 @1  ; /attn/MatMul
    sync.signal  unit=dma sem=l1
    dma.ld       dst=0x2480 src=0x1100 rows=1 bytes=64 dpitch=64 spitch=64 dt=f32 tdt=bf16 @2  ; /attn/out/MatMul
    sync.signal  unit=dma sem=l1
    sync.wait    unit=vpu sem=l1 value=5
    vpu.max      dst=0x1fc0 a=0x1fc0 b=0x2240 rows=8 cols=8 pd=64 pa=64 bcast=scalar dt=f32 tdt=bf16 @1  ; /attn/MatMul
    vpu.softmax  dst=0x1fc0 src=0x1fc0 rows=8 cols=8 pd=64 ps=64 scale=1.0 dt=f32 tdt=bf16 @1  ; /attn/MatMul
    vpu.mul      dst=0x1fc0 a=0x1fc0 b=0x21c0 rows=8 cols=8 pd=64 pa=64 bcast=col dt=f32 tdt=bf16 @1  ; /attn/MatMul
    sync.signal  unit=vpu sem=l5
    sync.wait    unit=spu sem=l0 value=5
    sync.wait    unit=spu sem=l5 value=3
    spu.mm       dst=0x2280 a=0x1fc0 b=0x1dc0 m=8 n=8 k=8 pd=64 pa=64 pb=64 dt=f32 tdt=i8 @1  ; /attn/MatMul
    sync.signal  unit=spu sem=l2
    sync.wait    unit=dma sem=l2 value=2
    dma.st       dst=0x1c20 src=0x2280 rows=8 bytes=32 dpitch=64 spitch=64 dt=f32 tdt=bf16 @1  ; /attn/MatMul
    dma.ld       dst=0x24c0 src=0x1c00 rows=1 bytes=512 dpitch=64 spitch=512 dt=f32 tdt=bf16 @2  ; /attn/out/MatMul
    sync.signal  unit=dma sem=l1
    dma.ld       dst=0x26c0 src=0xd00 rows=1 bytes=1024 dpitch=64 spitch=1024 dt=f32 tdt=i8 @2  ; /attn/out/MatMul
    sync.signal  unit=dma sem=l0
    sync.wait    unit=vpu sem=l1 value=7
    vpu.cvt      dst=0x24c0 src=0x24c0 rows=8 cols=16 pd=64 ps=64 scale=1.0 sdt=f32 dt=f32 tdt=i8 @2  ; /attn/out/MatMul
    sync.signal  unit=vpu sem=l5
    dma.ld       dst=0x2cc0 src=0x1140 rows=1 bytes=64 dpitch=64 spitch=64 dt=f32 tdt=bf16 @3  ; /attn/LayerNorm
    sync.wait    unit=spu sem=l0 value=6
    sync.wait    unit=spu sem=l5 value=4
    spu.mm       dst=0x2ac0 a=0x24c0 b=0x26c0 m=8 n=16 k=16 pd=64 pa=64 pb=64 tb=1 dt=f32 tdt=i8 @2  ; /attn/out/MatMul
    sync.signal  unit=spu sem=l3
    sync.wait    unit=vpu sem=l3 value=4
    vpu.epilogue dst=0x2ac0 src=0x2ac0 bias=0x2480 rows=8 cols=16 pd=64 ps=64 hb=1 dt=f32 tdt=bf16 @2  ; /attn/out/MatMul
    sync.signal  unit=vpu sem=l4
    sync.wait    unit=dma sem=l4 value=2
    dma.st       dst=0x1600 src=0x2ac0 rows=1 bytes=512 dpitch=512 spitch=512 dt=f32 tdt=bf16 @2  ; /attn/out/MatMul
    dma.ld       dst=0x2d00 src=0x1180 rows=1 bytes=64 dpitch=64 spitch=64 dt=f32 tdt=bf16 @3  ; /attn/LayerNorm
    sync.signal  unit=dma sem=l1
    dma.ld       dst=0x2d40 src=0x1600 rows=1 bytes=512 dpitch=64 spitch=512 dt=f32 tdt=bf16 @3  ; /attn/LayerNorm
    dma.ld       dst=0x3140 src=x rows=1 bytes=512 dpitch=64 spitch=512 dt=f32 tdt=bf16 @3  ; /attn/LayerNorm
    sync.signal  unit=dma sem=l1
    sync.wait    unit=vpu sem=l1 value=9
    vpu.add      dst=0x2f40 a=0x2d40 b=0x3140 rows=8 cols=16 pd=64 pa=64 pb=64 dt=f32 tdt=bf16 @3  ; /attn/LayerNorm
    vpu.layernorm dst=0x2f40 src=0x2f40 gamma=0x2cc0 beta=0x2d00 rows=8 cols=16 pd=64 ps=64 eps=9.999999960041972e-13 dt=f32 tdt=bf16 @3  ; /attn/LayerNorm
    sync.signal  unit=vpu sem=l4
    sync.wait    unit=dma sem=l4 value=3
    dma.st       dst=y src=0x2f40 rows=1 bytes=512 dpitch=512 spitch=512 dt=f32 tdt=bf16 @3  ; /attn/LayerNorm
    end
.core 1
    dma.ld       dst=0x0 src=0xc00 rows=1 bytes=192 dpitch=192 spitch=192 dt=f32 tdt=bf16 @0  ; /attn/qkv/MatMul
    sync.signal  unit=dma sem=l1
    dma.ld       dst=0xc0 src=x rows=1 bytes=512 dpitch=64 spitch=512 dt=f32 tdt=bf16 @0  ; /attn/qkv/MatMul
    sync.signal  unit=dma sem=l1
    dma.ld       dst=0x2c0 src=0x800 rows=1 bytes=1024 dpitch=64 spitch=1024 dt=f32 tdt=i8 @0  ; /attn/qkv/MatMul
    sync.signal  unit=dma sem=l0
    sync.wait    unit=vpu sem=l1 value=2
    vpu.cvt      dst=0xc0 src=0xc0 rows=8 cols=16 pd=64 ps=64 scale=1.0 sdt=f32 dt=f32 tdt=i8 @0  ; /attn/qkv/MatMul
    sync.signal  unit=vpu sem=l5
    sync.wait    unit=spu sem=l0 value=1
    sync.wait    unit=spu sem=l5 value=1
    spu.mm       dst=0x6c0 a=0xc0 b=0x2c0 m=8 n=16 k=16 pd=64 pa=64 pb=64 tb=1 dt=f32 tdt=i8 @0  ; /attn/qkv/MatMul
    sync.signal  unit=spu sem=l3
    sync.wait    unit=vpu sem=l3 value=1
    vpu.epilogue dst=0x6c0 src=0x6c0 bias=0x80 rows=8 cols=16 pd=64 ps=64 hb=1 dt=f32 tdt=bf16 @0  ; /attn/qkv/MatMul
    sync.signal  unit=vpu sem=l4
    sync.wait    unit=dma sem=l4 value=1
    dma.st       dst=0x1680 src=0x6c0 rows=8 bytes=64 dpitch=192 spitch=64 dt=f32 tdt=bf16 @0  ; /attn/qkv/MatMul
    sync.signal  unit=dma sem=g2
    end
